// Throughput and latency of the built worker in workerd (miniflare, local R2)
// on loopback, next to a minimal "return 200" worker as this machine's floor,
// plus the release build's size. Bounded: a fixed number of requests.
//
//   bash scripts/build-worker.sh && node bench/workerd.mjs [requests] [concurrency]
import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { Miniflare } from 'miniflare'
import { startWorker, Peer } from '../tests/workerd/harness.mjs'

const REQUESTS = Number(process.argv[2] || 4000)
const CONCURRENCY = Number(process.argv[3] || 50)
const ROOMS = 50
const PEERS_PER_ROOM = 4

function stats (latencies, elapsedMs) {
  const sorted = [...latencies].sort((a, b) => a - b)
  const at = q => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
  return {
    requests: sorted.length,
    perSecond: Math.round(sorted.length / (elapsedMs / 1000)),
    p50: at(0.5).toFixed(2),
    p99: at(0.99).toFixed(2)
  }
}

/** Runs `count` calls of `send(i)` with `concurrency` in flight; returns latencies (ms). */
async function load (count, concurrency, send) {
  const latencies = []
  let next = 0
  const start = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) {
      const i = next++
      const t0 = performance.now()
      const res = await send(i)
      if (res.status !== 200) throw new Error(`request ${i}: ${res.status} ${res.text}`)
      latencies.push(performance.now() - t0)
    }
  }))
  return stats(latencies, performance.now() - start)
}

async function floor () {
  const mf = new Miniflare({
    modules: true,
    script: 'export default { fetch () { return new Response("{}", { headers: { "content-type": "application/json" } }) } }',
    compatibilityDate: '2026-04-20',
    host: '127.0.0.1',
    port: 0
  })
  const url = (await mf.ready).href
  const body = JSON.stringify({ r: 'floor-room', k: 'x' })
  try {
    await load(200, CONCURRENCY, () => fetch(url, { method: 'POST', body }).then(async r => ({ status: r.status, text: await r.text() })))
    return await load(REQUESTS, CONCURRENCY, () => fetch(url, { method: 'POST', body }).then(async r => ({ status: r.status, text: await r.text() })))
  } finally {
    await mf.dispose()
  }
}

async function worker () {
  const w = await startWorker()
  try {
    const peers = []
    for (let r = 0; r < ROOMS; r++) {
      for (let i = 0; i < PEERS_PER_ROOM; i++) peers.push(new Peer(w.url, `bench-room-${r}`, i))
    }
    const t = Date.now()
    // Join: every peer publishes once (rooms in parallel, peers of a room in turn).
    const joinStart = performance.now()
    await Promise.all(Array.from({ length: ROOMS }, async (_, r) => {
      for (const p of peers.slice(r * PEERS_PER_ROOM, (r + 1) * PEERS_PER_ROOM)) {
        const res = await p.publish(t)
        if (res.status !== 200) throw new Error(`publish ${res.status} ${res.text}`)
      }
    }))
    const joinMs = performance.now() - joinStart
    // Polls with d, as a stock client sends them (some fall in join windows).
    const polls = await load(REQUESTS, CONCURRENCY, i => peers[i % peers.length].poll(t))
    return { polls, joinMs }
  } finally {
    await w.stop()
  }
}

function size () {
  const wasm = readFileSync(new URL('../build/index_bg.wasm', import.meta.url))
  const js = readFileSync(new URL('../build/index.js', import.meta.url))
  return {
    wasm: wasm.length,
    wasmGzip: gzipSync(wasm, { level: 9 }).length,
    js: js.length,
    jsGzip: gzipSync(js, { level: 9 }).length
  }
}

const s = size()
console.log(`size: wasm ${s.wasm} B (${s.wasmGzip} B gzip), js ${s.js} B (${s.jsGzip} B gzip); ` +
  `total ${s.wasmGzip + s.jsGzip} B gzip of the free plan's 3 MB (${((s.wasmGzip + s.jsGzip) / 3e6 * 100).toFixed(1)} %)`)
const f = await floor()
console.log(`floor ("return 200" worker): ${f.requests} requests, ${f.perSecond} req/s, p50 ${f.p50} ms, p99 ${f.p99} ms (concurrency ${CONCURRENCY})`)
const { polls, joinMs } = await worker()
console.log(`p2pcf-rs: ${ROOMS} rooms x ${PEERS_PER_ROOM} peers joined in ${Math.round(joinMs)} ms; ` +
  `polls: ${polls.requests} requests, ${polls.perSecond} req/s, p50 ${polls.p50} ms, p99 ${polls.p99} ms (concurrency ${CONCURRENCY})`)
console.log('CPU time per request is not reported by local workerd; see `cargo cpu` for the native figure.')
