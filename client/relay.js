// SignalRelay: signalling for any WebRTC library through the worker's relay
// API (`POST <worker>/relay/v1`). Plain ES module, no dependencies.
//
//   const relay = new SignalRelay({ url, room, meta })
//   relay.on('join', (peerId, meta) => {})   // every peer, those already there included
//   relay.on('leave', peerId => {})
//   relay.on('signal', (fromPeerId, data) => {})
//   relay.on('error', err => {})
//   await relay.start()                // resolves once joined; relay.id is this peer's id
//   await relay.send(peerId, data)     // resolves when the worker has stored it
//   await relay.broadcast(data)
//   relay.stop()                       // leaves
//
// Messages queued between two requests go out together; a request that
// sends also polls. Each message carries a sequence number, so a retried
// request stores it once, and the cursor sent with every poll (the last
// number taken from each sender) makes each arrive once and in order, even
// when an answer is lost. Failures (network, 429, 503) are retried with
// back-off, honouring Retry-After; polls follow the worker's hints.

const RELAY_PATH = '/relay/v1'
const MAX_BATCH = 64

export class SignalRelay {
  constructor ({ url, room, meta = null, fetch: doFetch } = {}) {
    if (!url || !room) throw new Error('SignalRelay needs { url, room }')
    this.url = url.replace(/\/+$/, '') + RELAY_PATH
    this.room = room
    this.meta = meta
    this.id = null
    this.peers = new Map()
    this._fetch = doFetch || ((...args) => globalThis.fetch(...args))
    this._token = null
    this._after = {}
    this._seq = 0
    this._queue = []
    this._inFlight = null
    this._timer = null
    this._failures = 0
    this._stopped = false
    this._handlers = new Map()
    this._onPageHide = () => this.stop()
  }

  on (event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set())
    this._handlers.get(event).add(fn)
    return this
  }

  off (event, fn) {
    this._handlers.get(event)?.delete(fn)
    return this
  }

  _emit (event, ...args) {
    for (const fn of this._handlers.get(event) || []) {
      try { fn(...args) } catch (err) { if (event !== 'error') this._emit('error', err) }
    }
  }

  /** Joins the room; resolves once joined (retries while the worker is busy). */
  async start () {
    if (this.id) return this
    for (;;) {
      if (this._stopped) throw new Error('stopped')
      try {
        const answer = await this._post({ room: this.room, meta: this.meta ?? undefined })
        this.id = answer.id
        this._token = answer.token
        this._take(answer)
        break
      } catch (err) {
        if (!err.retry) throw err
        this._emit('error', err)
        await sleep(this._backoff(err))
      }
    }
    if (typeof addEventListener === 'function') addEventListener('pagehide', this._onPageHide)
    this._schedule(0)
    return this
  }

  /** Queues `data` (any JSON value) for `peerId`; resolves when the worker stored it. */
  send (peerId, data) {
    return this._enqueue(peerId, data)
  }

  /** Queues `data` for every peer in the room when it is sent. */
  broadcast (data) {
    return this._enqueue('*', data)
  }

  /** Leaves the room (with a keepalive request, so it also works on page hide). */
  stop () {
    if (this._stopped) return
    this._stopped = true
    clearTimeout(this._timer)
    if (typeof removeEventListener === 'function') removeEventListener('pagehide', this._onPageHide)
    for (const m of this._queue) m.reject(new Error('stopped'))
    this._queue = []
    if (this.id) {
      const body = JSON.stringify({ room: this.room, id: this.id, token: this._token, leave: true })
      this._fetch(this.url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body, keepalive: true }).catch(() => {})
    }
  }

  _enqueue (to, data) {
    if (this._stopped) return Promise.reject(new Error('stopped'))
    return new Promise((resolve, reject) => {
      this._queue.push({ to, seq: ++this._seq, data, resolve, reject })
      if (this.id && !this._inFlight) this._schedule(0)
    })
  }

  _schedule (ms) {
    clearTimeout(this._timer)
    if (!this._stopped) this._timer = setTimeout(() => this._sync(), ms)
  }

  async _sync () {
    if (this._stopped || this._inFlight || !this.id) return
    // The same batch goes again after a failure: same seqs, stored once.
    const batch = this._queue.slice(0, MAX_BATCH)
    this._inFlight = batch
    let next = 2000
    try {
      const answer = await this._post({
        room: this.room,
        id: this.id,
        token: this._token,
        after: this._after,
        send: batch.map(({ to, seq, data }) => ({ to, seq, data }))
      })
      this._failures = 0
      this._queue.splice(0, batch.length)
      for (const m of batch) m.resolve()
      this._take(answer)
      next = this._queue.length ? 0 : (answer.hint?.ms ?? 2000)
    } catch (err) {
      if (err.status === 410) {
        // Gone (expired or left elsewhere): join again as a new peer.
        this._emit('error', err)
        for (const id of [...this.peers.keys()]) { this.peers.delete(id); this._emit('leave', id) }
        this.id = null
        this._after = {}
        this._inFlight = null
        this.start().catch(e => this._emit('error', e))
        return
      }
      this._emit('error', err)
      if (err.retry) {
        next = this._backoff(err)
      } else {
        // Refused for good (4xx): the batch cannot be stored as it is.
        this._queue.splice(0, batch.length)
        for (const m of batch) m.reject(err)
        next = 0
      }
    } finally {
      if (this._inFlight === batch) this._inFlight = null
    }
    this._schedule(next)
  }

  /** Applies an answer: peers that came and went, messages not taken before. */
  _take (answer) {
    const now = new Map((answer.peers || []).map(p => [p.id, p.meta ?? null]))
    for (const id of [...this.peers.keys()]) {
      if (!now.has(id)) { this.peers.delete(id); this._emit('leave', id) }
    }
    for (const [id, meta] of now) {
      if (!this.peers.has(id)) { this.peers.set(id, meta); this._emit('join', id, meta) }
    }
    for (const m of answer.messages || []) {
      if (m.seq <= (this._after[m.from] ?? 0)) continue
      this._after[m.from] = m.seq
      this._emit('signal', m.from, m.data)
    }
  }

  _backoff (err) {
    this._failures++
    if (err.retryAfterMs) return err.retryAfterMs
    const cap = Math.min(30000, 500 * 2 ** Math.min(this._failures, 6))
    return cap / 2 + Math.random() * cap / 2
  }

  async _post (body) {
    let res
    try {
      res = await this._fetch(this.url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
    } catch (cause) {
      throw Object.assign(new Error(`relay: network error: ${cause?.message ?? cause}`), { retry: true })
    }
    if (res.ok) return res.json()
    const text = await res.text().catch(() => '')
    const retryAfter = Number(res.headers.get('retry-after'))
    throw Object.assign(new Error(`relay: ${res.status} ${text}`), {
      status: res.status,
      retry: res.status === 429 || res.status >= 500,
      retryAfterMs: retryAfter > 0 ? retryAfter * 1000 : 0
    })
  }
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
