// SignalRelay: signalling for any WebRTC library through the worker's relay
// API: pushed over a WebSocket where the deployment offers it (its relay
// rooms' Durable Objects), else by polling `POST <worker>/relay/v1`. Plain
// ES module, no dependencies.
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
// back-off, honouring Retry-After; polls follow the worker's hints. A
// refusal (400, 401, 403, 409, 413) rejects the batch it came with and is
// backed off too; after a few in a row the relay stops with an `error` event
// (`err.fatal`). A join carries a random nonce, so a join retried after a
// lost answer is the same join. On `pagehide` it leaves; when the browser
// restores the page from its back/forward cache (`pageshow`, `persisted`)
// it joins again as a new peer.
//
// Push (`transport: 'auto'`, the default): the socket's first frame joins or
// comes back (id, token, cursors), messages and joins/leaves arrive the
// moment they happen, and a batch is done when the worker acks it. A socket
// that drops is reopened with back-off and resumes where it was; one that
// cannot be opened (no WebSocket, a 501 from a deployment without push, a
// proxy) falls back to polling, which reaches the same room.

const RELAY_PATH = '/relay/v1'
const MAX_BATCH = 64
/** Socket failures in a row after which the relay polls instead. */
const MAX_SOCKET_FAILURES = 3
/** Keep-alive: answered by the worker without waking the room. */
const PING_MS = 30000
/** Refusals in a row after which the relay stops (`error` with `fatal`). */
const MAX_REFUSALS = 3

export class SignalRelay {
  constructor ({ url, room, meta = null, fetch: doFetch, transport = 'auto', WebSocket: Socket } = {}) {
    if (!url || !room) throw new Error('SignalRelay needs { url, room }')
    if (!['auto', 'push', 'poll'].includes(transport)) throw new Error("transport is 'auto', 'push' or 'poll'")
    this.url = url.replace(/\/+$/, '') + RELAY_PATH
    this.room = room
    this.meta = meta
    this.id = null
    this.peers = new Map()
    this._fetch = doFetch || ((...args) => globalThis.fetch(...args))
    this._token = null
    this._after = {}
    this._readFrom = null
    this._seq = 0
    this._queue = []
    this._inFlight = null
    this._timer = null
    this._failures = 0
    this._refusals = 0
    this._stopped = false
    this._suspended = false
    this._listening = false
    this._handlers = new Map()
    this._transport = transport
    this._Socket = Socket || globalThis.WebSocket
    this._push = transport !== 'poll' && typeof this._Socket === 'function'
    this._ws = null
    this._wsBatch = null
    this._wsFailures = 0
    this._ping = null
    this._nonce = null
    // A page that may come back (back/forward cache) leaves and rejoins on return.
    this._onPageHide = event => { if (event?.persisted) this._suspend(); else this.stop() }
    this._onPageShow = event => { if (event?.persisted) this._resume() }
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
    // The same nonce for every attempt: a retry after a lost answer is the same join.
    const nonce = this._nonce = randomNonce()
    if (this._push) {
      try {
        await this._openSocket()
        this._listen()
        return this
      } catch (err) {
        if (this._transport === 'push' || this._stopped) throw err
        this._emit('error', err)
        this._push = false // polling reaches the same room
      }
    }
    for (;;) {
      if (this._stopped) throw new Error('stopped')
      try {
        const answer = await this._post({ room: this.room, meta: this.meta ?? undefined, nonce })
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
    this._failures = 0
    this._listen()
    this._schedule(0)
    return this
  }

  _listen () {
    if (!this._listening && typeof addEventListener === 'function') {
      addEventListener('pagehide', this._onPageHide)
      addEventListener('pageshow', this._onPageShow)
      this._listening = true
    }
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
    if (this._listening && typeof removeEventListener === 'function') {
      removeEventListener('pagehide', this._onPageHide)
      removeEventListener('pageshow', this._onPageShow)
      this._listening = false
    }
    this._leave(new Error('stopped'))
  }

  /** Leaves, rejecting what is queued (for good, or until `_resume`). */
  _leave (reason) {
    clearTimeout(this._timer)
    for (const m of this._queue) m.reject(reason)
    this._queue = []
    this._wsBatch = null
    const ws = this._ws
    if (ws) {
      this._ws = null
      clearInterval(this._ping)
      try { ws.send(JSON.stringify({ leave: true })) } catch {}
      try { ws.close(1000) } catch {}
    } else if (this.id) {
      const body = JSON.stringify({ room: this.room, id: this.id, token: this._token, leave: true })
      this._fetch(this.url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body, keepalive: true }).catch(() => {})
    }
  }

  /** Forgets this membership (the peers see it leave, and so do we). */
  _forget () {
    for (const id of [...this.peers.keys()]) { this.peers.delete(id); this._emit('leave', id) }
    this.id = null
    this._token = null
    this._after = {}
    this._readFrom = null
  }

  _suspend () {
    if (this._stopped || this._suspended) return
    this._suspended = true
    this._leave(new Error('page hidden'))
    this._forget()
  }

  _resume () {
    if (this._stopped || !this._suspended) return
    this._suspended = false
    this.start().catch(err => this._emit('error', err))
  }

  _enqueue (to, data) {
    if (this._stopped) return Promise.reject(new Error('stopped'))
    if (this._suspended) return Promise.reject(new Error('page hidden'))
    return new Promise((resolve, reject) => {
      this._queue.push({ to, seq: ++this._seq, data, resolve, reject })
      if (this.id && !this._inFlight) this._schedule(0)
    })
  }

  _schedule (ms) {
    clearTimeout(this._timer)
    if (!this._stopped && !this._suspended) this._timer = setTimeout(() => this._sync(), ms)
  }

  async _sync () {
    if (this._ws) return this._flushSocket()
    if (this._stopped || this._suspended || this._inFlight || !this.id) return
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
        // Where the last answer stopped reading the others' mail (R2 rooms).
        ...(this._readFrom ? { read_from: this._readFrom } : {}),
        send: batch.map(({ to, seq, data }) => ({ to, seq, data }))
      })
      this._failures = 0
      this._refusals = 0
      this._queue.splice(0, batch.length)
      for (const m of batch) m.resolve()
      this._take(answer)
      next = this._queue.length || answer.more ? 0 : (answer.hint?.ms ?? 2000)
    } catch (err) {
      if (err.status === 409 && batch[0]?.unsure) {
        // An earlier try of this very batch may have been stored (its answer
        // was lost): its numbers are used by no other batch, so "already
        // used" means it was. Once its letters expired the worker cannot
        // tell a retry from a reuse, so it answers 409; the batch is done.
        this._failures = 0
        this._queue.splice(0, batch.length)
        for (const m of batch) m.resolve()
        this._inFlight = null
        this._schedule(0)
        return
      }
      if (err.retry && batch[0]) batch[0].unsure = true
      if (err.status === 410) {
        // Gone (expired or left elsewhere): join again as a new peer.
        this._emit('error', err)
        this._forget()
        this._inFlight = null
        this.start().catch(e => this._emit('error', e))
        return
      }
      this._emit('error', err)
      if (!err.retry) {
        // Refused (4xx): the batch cannot be stored as it is. Refused again
        // and again (an origin no longer allowed, say), the relay gives up.
        this._queue.splice(0, batch.length)
        for (const m of batch) m.reject(err)
        if (++this._refusals >= MAX_REFUSALS) {
          this._inFlight = null
          this._emit('error', Object.assign(new Error(`relay: stopped after ${this._refusals} refusals in a row (last: ${err.message})`), { fatal: true, cause: err }))
          this.stop()
          return
        }
      }
      next = this._backoff(err)
    } finally {
      if (this._inFlight === batch) this._inFlight = null
    }
    this._schedule(next)
  }

  /** Applies an answer: peers that came and went, messages not taken before. */
  _take (answer) {
    this._readFrom = typeof answer.read_from === 'string' ? answer.read_from : null
    if (Array.isArray(answer.peers)) {
      const now = new Map(answer.peers.map(p => [p.id, p.meta ?? null]))
      for (const id of [...this.peers.keys()]) {
        if (!now.has(id)) { this.peers.delete(id); this._emit('leave', id) }
      }
      for (const [id, meta] of now) {
        if (!this.peers.has(id)) { this.peers.set(id, meta); this._emit('join', id, meta) }
      }
    }
    for (const m of answer.messages || []) {
      if (m.seq <= (this._after[m.from] ?? 0)) continue
      this._after[m.from] = m.seq
      this._emit('signal', m.from, m.data)
    }
  }

  /** Opens the socket; resolves once the worker welcomed this member. */
  _openSocket () {
    return new Promise((resolve, reject) => {
      const url = this.url.replace(/^http/, 'ws') + '?room=' + encodeURIComponent(this.room)
      let ws
      try { ws = new this._Socket(url) } catch (err) { reject(err); return }
      this._ws = ws
      let welcomed = false
      const hello = this.id
        ? { id: this.id, token: this._token, after: this._after }
        : { meta: this.meta ?? undefined, nonce: this._nonce }
      ws.onopen = () => ws.send(JSON.stringify(hello))
      ws.onmessage = event => {
        if (typeof event.data !== 'string' || event.data === 'pong') return
        let frame
        try { frame = JSON.parse(event.data) } catch { return }
        if (welcomed) return this._onFrame(frame)
        welcomed = true
        this.id = frame.id
        if (frame.token) this._token = frame.token
        this._wsFailures = 0
        this._failures = 0
        this._take({ peers: frame.peers })
        clearInterval(this._ping)
        this._ping = setInterval(() => { try { ws.send('ping') } catch {} }, PING_MS)
        resolve()
        this._flushSocket()
      }
      ws.onclose = event => {
        if (this._ws !== ws) return
        this._ws = null
        clearInterval(this._ping)
        const err = Object.assign(new Error(`relay: socket closed: ${event.code} ${event.reason || ''}`.trim()), {
          code: event.code,
          status: event.code >= 4000 && event.code < 5000 ? event.code - 4000 : undefined
        })
        err.retry = !err.status || err.status === 429 || err.status >= 500
        if (welcomed) this._socketLost(err)
        else reject(err)
      }
    })
  }

  /** Sends the next batch on the socket, one at a time (acked or refused). */
  _flushSocket () {
    const ws = this._ws
    if (!ws || ws.readyState !== 1 || this._wsBatch || !this._queue.length || this._stopped) return
    const batch = this._queue.slice(0, MAX_BATCH)
    this._wsBatch = batch
    ws.send(JSON.stringify({ send: batch.map(({ to, seq, data }) => ({ to, seq, data })) }))
  }

  /** A pushed frame: messages, joins, leaves, or the answer to our batch. */
  _onFrame (frame) {
    if (frame.messages) this._take({ messages: frame.messages })
    if (frame.joined && !this.peers.has(frame.joined.id)) {
      this.peers.set(frame.joined.id, frame.joined.meta ?? null)
      this._emit('join', frame.joined.id, frame.joined.meta ?? null)
    }
    if (frame.left && this.peers.delete(frame.left)) this._emit('leave', frame.left)
    const batch = this._wsBatch
    if (!batch || (frame.ack === undefined && frame.refused === undefined)) return
    this._wsBatch = null
    if (frame.ack !== undefined || (frame.status === 409 && batch[0]?.unsure)) {
      // Stored (a 409 for a batch sent before a drop: that try was stored).
      this._refusals = 0
      this._queue.splice(0, batch.length)
      for (const m of batch) m.resolve()
      return this._flushSocket()
    }
    const err = Object.assign(new Error(`relay: ${frame.status} ${frame.error}`), {
      status: frame.status,
      retry: frame.status === 429 || frame.status >= 500,
      retryAfterMs: (frame.retryAfter || 0) * 1000
    })
    this._emit('error', err)
    if (err.retry) {
      clearTimeout(this._timer)
      this._timer = setTimeout(() => this._flushSocket(), this._backoff(err))
      return
    }
    this._queue.splice(0, batch.length)
    for (const m of batch) m.reject(err)
    if (++this._refusals >= MAX_REFUSALS) return this._fatal(err)
    this._flushSocket()
  }

  /** The socket went after the welcome: come back, join anew, or poll. */
  _socketLost (err) {
    if (this._stopped || this._suspended) return
    if (this._wsBatch?.[0]) this._wsBatch[0].unsure = true
    this._wsBatch = null
    this._emit('error', err)
    if (err.status === 410) {
      this._forget()
      this.start().catch(e => this._emit('error', e))
      return
    }
    if (!err.retry) return this._fatal(err)
    if (++this._wsFailures > MAX_SOCKET_FAILURES) {
      // Polling with the same id and token reaches the same member.
      this._push = false
      return this._schedule(0)
    }
    clearTimeout(this._timer)
    this._timer = setTimeout(() => {
      if (this._stopped || this._suspended) return
      this._openSocket().catch(e => this._socketLost(e))
    }, this._backoff(err))
  }

  _fatal (err) {
    this._emit('error', Object.assign(new Error(`relay: stopped after ${this._refusals || 1} refusals (last: ${err.message})`), { fatal: true, cause: err }))
    this.stop()
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

/** 128 random bits, base64url. */
function randomNonce () {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16))
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}
