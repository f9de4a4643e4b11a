// The README's run command (scripts/dev.sh: wrangler dev with local R2)
// serves the status page and reports a working bucket, and survives a
// hostile request.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { request } from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const freePort = () => new Promise((resolve, reject) => {
  const s = createServer()
  s.once('error', reject)
  s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
})

test('scripts/dev.sh serves the status page with a working bucket and its self-test', { timeout: 300000 }, async () => {
  const [port, inspector] = [await freePort(), await freePort()]
  const state = mkdtempSync(join(tmpdir(), 'p2pcf-dev-state-'))
  const root = new URL('../../', import.meta.url).pathname
  const dev = spawn('bash', ['scripts/dev.sh', '--persist-to', state], {
    cwd: root,
    env: { ...process.env, PORT: String(port), INSPECTOR_PORT: String(inspector) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true
  })
  let output = ''
  dev.stdout.on('data', d => { output += d })
  dev.stderr.on('data', d => { output += d })
  try {
    const deadline = Date.now() + 280000
    let html = null
    while (Date.now() < deadline && dev.exitCode === null) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/`)
        html = await res.text()
        assert.equal(res.status, 200)
        break
      } catch {
        await new Promise(resolve => setTimeout(resolve, 500))
      }
    }
    assert.ok(html, `wrangler dev did not serve the status page:\n${output.slice(-3000)}`)
    assert.match(html, /R2 bucket is configured and answering/)
    // The status page's self-test is served from the static assets.
    const script = await fetch(`http://127.0.0.1:${port}/self-test.js`)
    assert.equal(script.status, 200)
    assert.match(script.headers.get('content-type'), /javascript/)
    assert.match(await script.text(), /self-test-run/)

    // Issue 17: a hostile chunked body of 2.5 MB is answered 413, and the
    // same server answers the next requests (wrangler dev used to exit).
    for (let round = 0; round < 3; round++) {
      const hostile = await chunkedPost(port, 2.5e6)
      assert.equal(hostile, 413, `round ${round}: ${output.slice(-2000)}`)
      const next = await fetch(`http://127.0.0.1:${port}/`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ r: 'room-after-hostile', k: 'ctx' })
      })
      assert.equal(next.status, 200, `round ${round}: ${await next.text()}`)
    }
    assert.equal(dev.exitCode, null, 'wrangler dev is still running')
  } finally {
    try { process.kill(-dev.pid, 'SIGTERM') } catch {}
    rmSync(state, { recursive: true, force: true })
  }
})

/** POSTs `size` bytes as a chunked body as fast as the server takes them; the status. */
function chunkedPost (port, size) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' } }, res => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('error', reject)
    const chunk = Buffer.alloc(16384, 'a')
    let sent = 0
    const write = () => {
      while (sent < size) {
        sent += chunk.length
        if (!req.write(chunk)) { req.once('drain', write); return }
      }
      req.end()
    }
    write()
  })
}
