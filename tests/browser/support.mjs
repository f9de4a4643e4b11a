// Shared by the browser tests: the test page (the stock p2pcf client bundled
// by esbuild, served from 127.0.0.1), Debian's Chromium driven by
// playwright-core, and a polling helper.
import http from 'node:http'
import { build } from 'esbuild'
import { chromium } from 'playwright-core'

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

async function bundlePage () {
  const out = await build({
    entryPoints: [new URL('page.mjs', import.meta.url).pathname],
    bundle: true,
    format: 'esm',
    define: { global: 'window' },
    write: false,
    logLevel: 'silent'
  })
  return out.outputFiles[0].text
}

/** Serves the page and launches Chromium. Returns { browser, openClient, stop }. */
export async function startBrowser () {
  const script = await bundlePage()
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/page.js')) {
      res.writeHead(200, { 'Content-Type': 'text/javascript' })
      res.end(script)
    } else {
      res.writeHead(200, { 'Content-Type': 'text/html' })
      res.end('<!doctype html><meta charset="utf-8"><title>p2pcf test</title><script type="module" src="/page.js"></script>')
    }
  })
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  const pageOrigin = `http://127.0.0.1:${server.address().port}`
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true })

  /** Opens the page as a stock client; `params` become its query (worker, client, room, hints, turn). */
  async function openClient (params) {
    const context = await browser.newContext()
    const page = await context.newPage()
    page.on('console', m => { if (m.type() === 'error') console.log(`[${params.client}] ${m.text()}`) })
    await page.goto(`${pageOrigin}/?${new URLSearchParams(params)}`)
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
