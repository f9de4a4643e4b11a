// Runs the built worker (build/index.js + wasm) in workerd through
// miniflare's Node API, with a local R2 bucket, on 127.0.0.1 and a free port.
import { readFileSync } from 'node:fs'
import { Miniflare } from 'miniflare'
import WebSocket from 'ws'

const root = new URL('../../', import.meta.url)
const compatibilityDate = readFileSync(new URL('wrangler.toml', root), 'utf8')
  .match(/^compatibility_date\s*=\s*"([^"]+)"/m)[1]

/**
 * Starts the worker; `vars` become its [vars]; `push` binds RELAY_ROOMS (the
 * relay rooms' Durable Objects, SQLite-backed), TOPIC_ROOMS (y-webrtc's) and
 * PEER_ROOMS (PeerJS's)
 * as wrangler.toml does;
 * `persist`, a directory, keeps their storage across restarts.
 * Returns { url, logs, stop, bucket }.
 */
export async function startWorker ({ vars = {}, bucket = true, ratelimits, push = true, persist } = {}) {
  const mf = new Miniflare({
    modules: true,
    scriptPath: new URL('build/index.js', root).pathname,
    modulesRoot: new URL('build/', root).pathname,
    modulesRules: [
      { type: 'ESModule', include: ['**/*.js'] },
      { type: 'CompiledWasm', include: ['**/*.wasm'] }
    ],
    compatibilityDate,
    // Static assets in front of the worker, as wrangler.toml's [assets].
    // (run_worker_first = ["/*", "!/self-test.js"] becomes this static routing).
    assets: {
      directory: new URL('build/assets', root).pathname,
      routerConfig: { has_user_worker: true, static_routing: { user_worker: ['/*'], asset_worker: ['/self-test.js'] } },
      assetConfig: { has_static_routing: true }
    },
    r2Buckets: bucket ? ['BUCKET'] : [],
    durableObjects: push
      ? { RELAY_ROOMS: { className: 'RelayRoom', useSQLite: true }, TOPIC_ROOMS: { className: 'TopicRoom', useSQLite: true }, PEER_ROOMS: { className: 'PeerRoom', useSQLite: true } }
      : {},
    // A directory keeps the objects' storage across a restart (a deploy).
    ...(persist ? { durableObjectsPersist: persist } : {}),
    bindings: vars,
    ...(ratelimits ? { ratelimits } : {}),
    host: '127.0.0.1',
    port: 0,
    // The worker's log lines (one JSON line per request) are kept, not printed.
    handleRuntimeStdio (stdout, stderr) {
      for (const stream of [stdout, stderr]) {
        let rest = ''
        stream.on('data', chunk => {
          const lines = (rest + chunk).split('\n')
          rest = lines.pop()
          logs.push(...lines.filter(l => l.trim()))
        })
      }
    }
  })
  const logs = []
  const url = (await mf.ready).href.replace(/\/$/, '')
  return {
    url,
    logs,
    bucket: bucket ? () => mf.getR2Bucket('BUCKET') : null,
    stop: () => mf.dispose()
  }
}

export const FINGERPRINT = 'q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k='

/** A protocol client shaped like the stock one: bodies it sends, and its delete key. */
export class Peer {
  constructor (url, room, n) {
    this.url = url
    this.room = room
    this.context = `ctx-${n}`
    this.session = `session-${n}-${Math.random().toString(36).slice(2, 8)}`
    this.joinedAt = Date.now() + n
    this.dk = null
  }

  d () {
    return [this.session, `client-${this.context}`, false, FINGERPRINT, this.joinedAt, ['203.0.113.7']]
  }

  async send (body, { leave = false, origin } = {}) {
    const headers = { 'Content-Type': 'application/json ' }
    if (leave) headers['X-Worker-Method'] = 'DELETE'
    if (origin) headers.Origin = origin
    const res = await fetch(this.url, { method: 'POST', headers, body: JSON.stringify(body) })
    const text = await res.text()
    let json = null
    try { json = JSON.parse(text) } catch {}
    if (json && json.dk) this.dk = json.dk
    // The polling hint is kept apart so that bodies compare as the stock client sees them.
    const hint = json?.hint ?? null
    if (json) delete json.hint
    return { status: res.status, headers: res.headers, text, json, hint }
  }

  firstPoll (opts) { return this.send({ r: this.room, k: this.context }, opts) }
  poll (t, opts) { return this.send({ r: this.room, k: this.context, d: this.d(), t, x: 120000 }, opts) }
  publish (t, p = [], opts) { return this.send({ r: this.room, k: this.context, d: this.d(), t, x: 120000, p }, opts) }
  leave (t = Date.now()) {
    return this.send({ r: this.room, k: this.context, d: this.d(), t, x: 120000, dk: this.dk }, { leave: true })
  }

  packageTo (peer, sentAt = Date.now()) {
    return [peer.session, this.session, null, null, null, 'ufrag', 'pwd', sentAt, ['candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host']]
  }
}

/** R2 operations the worker reports for a response: { a, b }. */
export function r2Ops (res) {
  const m = /A=(\d+) B=(\d+)/.exec(res.headers.get('x-r2-ops') || '')
  return m ? { a: Number(m[1]), b: Number(m[2]) } : null
}

export const sessions = res => res.json.ps.map(p => p[0]).sort()

/**
 * A WebSocket on `path` of the worker at `base`, with a queue of frames
 * (parsed JSON, else the text) and its close.
 */
export function connectSocket (base, path, headers = {}) {
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}${path}`, { headers })
  const frames = []
  const waiting = []
  ws.on('message', data => {
    const text = data.toString()
    let frame
    try { frame = JSON.parse(text) } catch { frame = text }
    const w = waiting.shift()
    if (w) w(frame)
    else frames.push(frame)
  })
  const closed = new Promise(resolve => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  const opened = new Promise((resolve, reject) => {
    ws.on('open', resolve)
    ws.on('unexpected-response', (_, res) => {
      let body = ''
      res.on('data', c => { body += c })
      res.on('end', () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode} ${body}`), { status: res.statusCode, body })))
    })
    ws.on('error', reject)
  })
  return {
    ws,
    opened,
    closed,
    send: frame => ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame)),
    /** The next frame, within `ms` (5 s). */
    next: (ms = 5000) => frames.length
      ? Promise.resolve(frames.shift())
      : new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no frame within ${ms} ms`)), ms)
        waiting.push(f => { clearTimeout(timer); resolve(f) })
      }),
    pending: () => frames.length
  }
}
