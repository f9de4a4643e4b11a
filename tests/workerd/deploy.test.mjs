// Proof of deployability: `wrangler deploy --dry-run` on the release build
// bundles the worker exactly as a real deploy would (no account needed) and
// lists its bindings; the bundle must fit the free plan's 3 MB compressed.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'

const FREE_PLAN_LIMIT = 3 * 1024 * 1024

test('wrangler deploy --dry-run bundles the worker with its R2 binding', { timeout: 300000 }, () => {
  const outdir = mkdtempSync(join(tmpdir(), 'p2pcf-dry-run-'))
  try {
    const output = execFileSync('npx', ['wrangler', 'deploy', '--dry-run', '--outdir', outdir], {
      cwd: new URL('../../', import.meta.url).pathname,
      env: { ...process.env, CI: 'true', WRANGLER_SEND_METRICS: 'false' },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe']
    })
    const summary = output.split('\n').filter(l => !l.includes('[custom build]'))
    assert.ok(summary.some(l => /env\.BUCKET \(p2pcf\)\s+R2 Bucket/.test(l)), `bindings listed:\n${summary.join('\n')}`)
    const upload = /Total Upload: ([\d.]+) KiB \/ gzip: ([\d.]+) KiB/.exec(output)
    assert.ok(upload, 'wrangler reports the upload size')
    const files = readdirSync(outdir).filter(f => f.endsWith('.js') || f.endsWith('.wasm'))
    assert.ok(files.some(f => f.endsWith('.wasm')) && files.includes('index.js'), files.join(', '))
    const gzip = files.reduce((sum, f) => sum + gzipSync(readFileSync(join(outdir, f)), { level: 9 }).length, 0)
    console.log(`dry-run bundle: ${upload[1]} KiB, ${upload[2]} KiB gzip (wrangler); ${(gzip / 1024).toFixed(1)} KiB gzip -9; ` +
      `free-plan limit ${FREE_PLAN_LIMIT / 1024} KiB (${(gzip / FREE_PLAN_LIMIT * 100).toFixed(1)} % used)`)
    assert.ok(Number(upload[2]) * 1024 < FREE_PLAN_LIMIT)
  } finally {
    rmSync(outdir, { recursive: true, force: true })
  }
})
