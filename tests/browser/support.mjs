// Shared by the browser tests: the test page (the stock p2pcf client bundled
// by esbuild, served from 127.0.0.1), Debian's Chromium driven by
// playwright-core, and a polling helper.
import http from 'node:http'
import net from 'node:net'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { build } from 'esbuild'
import { chromium } from 'playwright-core'

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

async function bundle (file) {
  const out = await build({
    entryPoints: [new URL(file, import.meta.url).pathname],
    bundle: true,
    format: 'esm',
    define: { global: 'window' },
    write: false,
    logLevel: 'silent'
  })
  return out.outputFiles[0].text
}

/**
 * Serves the test pages and launches Chromium. `/` runs page.mjs (the stock
 * p2pcf client); `/relay` runs relay-page.mjs (client/relay.js with
 * simple-peer's own browser bundle from node_modules); `/swarm` runs
 * swarm-page.mjs (fast-rtc-swarm over the relay); `/yjs` runs yjs-page.mjs
 * (y-webrtc and Yjs, unchanged); `/peerjs-client` runs peerjs-page.mjs
 * (PeerJS, unchanged); `/trystero` runs trystero-page.mjs (Trystero through
 * the worker or its MQTT strategy).
 * Returns { browser, openClient, stop }.
 */
export async function startBrowser () {
  const scripts = {
    '/page.js': await bundle('page.mjs'),
    '/relay-page.js': await bundle('relay-page.mjs'),
    '/swarm-page.js': await bundle('swarm-page.mjs'),
    '/yjs-page.js': await bundle('yjs-page.mjs'),
    '/peerjs-page.js': await bundle('peerjs-page.mjs'),
    '/trystero-page.js': await bundle('trystero-page.mjs'),
    '/simplepeer.min.js': readFileSync(new URL('../../node_modules/simple-peer/simplepeer.min.js', import.meta.url), 'utf8')
  }
  const html = body => `<!doctype html><meta charset="utf-8"><title>p2pcf test</title>${body}`
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0]
    if (scripts[path]) {
      res.writeHead(200, { 'Content-Type': 'text/javascript' })
      res.end(scripts[path])
    } else if (path === '/yjs') {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end(html('<script type="module" src="/yjs-page.js"></script>'))
    } else if (path === '/trystero') {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end(html('<script type="module" src="/trystero-page.js"></script>'))
    } else if (path === '/peerjs-client') {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end(html('<script type="module" src="/peerjs-page.js"></script>'))
    } else if (path === '/swarm') {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end(html('<script type="module" src="/swarm-page.js"></script>'))
    } else if (path === '/relay') {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end(html('<script src="/simplepeer.min.js"></script><script type="module" src="/relay-page.js"></script>'))
    } else {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end(html('<script type="module" src="/page.js"></script>'))
    }
  })
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  const pageOrigin = `http://127.0.0.1:${server.address().port}`
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true })

  /** Opens a test page (`/` or `/relay`); `params` become its query (worker, client, room, ...). */
  async function openClient (params, path = '/') {
    const context = await browser.newContext()
    const page = await context.newPage()
    page.on('console', m => { if (m.type() === 'error') console.log(`[${params.client ?? params.name}] ${m.text()}`) })
    page.on('pageerror', e => console.log(`[${params.client ?? params.name}] page error: ${e.message}`))
    await page.goto(`${pageOrigin}${path}?${new URLSearchParams(params)}`)
    return { context, page }
  }

  return {
    browser,
    openClient,
    stop: async () => {
      await browser.close()
      server.close()
    }
  }
}

/** Polls `fn` every 100 ms until it returns something truthy. */
export async function until (what, fn, timeoutMs = 30000) {
  const start = Date.now()
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

/** A TCP port on 127.0.0.1 nobody listens on (coturn takes UDP and TCP on it). */
export async function freePort () {
  const server = net.createServer()
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise(resolve => server.close(resolve))
  return port
}

/**
 * Starts Debian's coturn on 127.0.0.1 with the TURN REST API shared
 * `secret` (`use-auth-secret`), relaying on 201 ports from `relayBase`.
 * Returns { port, relayBase, log(), stop() }.
 */
export async function startCoturn (secret) {
  const port = await freePort()
  const relayBase = 40000 + Math.floor(Math.random() * 20000)
  let log = ''
  const server = spawn('turnserver', [
    '-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${port}`,
    '--allow-loopback-peers', '--use-auth-secret', `--static-auth-secret=${secret}`,
    '--realm=p2pcf.test', '--no-tls', '--no-dtls', '--no-cli', '--no-software-attribute',
    `--min-port=${relayBase}`, `--max-port=${relayBase + 200}`, '--log-file=stdout', '--simple-log'
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  server.stdout.on('data', d => { log += d })
  server.stderr.on('data', d => { log += d })
  await until('coturn listening', () => new Promise(resolve => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
    socket.on('error', () => resolve(false))
  }), 15000)
  return { port, relayBase, log: () => log, stop: () => server.kill() }
}
