// The status page's self-test: two stock p2pcf clients (1.3.x, unchanged,
// bundled into this file at build time) run in the page, signal through the
// worker that served it, open a WebRTC connection to each other and swap a
// message, then leave. Each step shows how long it took, or why it failed
// and what to check.
//
// Served by Workers static assets (build/assets/self-test.js): loading it
// costs no worker request. The run itself is an ordinary p2pcf session in a
// room of its own (`self-test-<random>`): a handful of R2 operations, under
// the same origin rules and limits as any page; its one message travels
// over the peers' own data channel, never through the worker. When TURN is
// set up, it also mints one credential and asks the TURN server for a relay
// with it (an allocation, no traffic).
import P2PCF from 'p2pcf'

const workerUrl = location.origin
const $ = id => document.getElementById(id)

const STEPS = [
  ['webrtc', 'This browser can make WebRTC connections'],
  ['reach', 'The worker answers a signalling request from this page'],
  ['join', 'Peer A and peer B join the test room, and the worker lists both'],
  ['connect', 'They swap connection packages through the worker and connect directly'],
  ['message', 'A message goes from A to B and back, over their data channel'],
  ['leave', 'Both leave, and the room is empty again'],
  ['turn', 'TURN: credentials from GET /turn, and a relay allocated with them']
]

/** What to check when a request to the worker failed with this status. */
function adviceFor (status, reason) {
  const said = reason ? ` The worker said: “${reason}”.` : ''
  switch (status) {
    case 401: return `The worker refuses requests from this page's origin (${location.origin}).${said} Add it to ALLOWED_ORIGINS in wrangler.toml (or allow other origins with ORIGIN_QUOTA) and deploy again.`
    case 403: return `The worker refused the self-test's room or TURN call.${said} With ROOM_SECRET set, the page gets a room signed by the worker: reload it (the room lasts 10 minutes).`
    case 429: return `Too many requests: the origin's monthly quota (ORIGIN_QUOTA) or the RATE_LIMITER binding stopped this page.${said} Wait, or raise the limit.`
    case 503: return `R2 did not answer in time.${said} Check the bucket above; \`npx wrangler tail\` shows the errors.`
    case 404: return `This URL does not answer the p2pcf protocol.${said} Is the page served by the worker itself?`
    case 0: return `The request did not reach the worker (network error or blocked).${said}`
    default: return `Unexpected answer ${status}.${said} \`npx wrangler tail\` shows the request.`
  }
}

class StepFailed extends Error {}

function render () {
  const list = $('self-test-steps')
  list.replaceChildren(...STEPS.map(([id, label]) => {
    const li = document.createElement('li')
    li.dataset.step = id
    li.dataset.state = 'pending'
    li.innerHTML = '<span class="label"></span> <span class="time"></span><div class="detail"></div>'
    li.querySelector('.label').textContent = label
    return li
  }))
}

function mark (id, state, { ms, detail } = {}) {
  const li = document.querySelector(`#self-test-steps li[data-step="${id}"]`)
  li.dataset.state = state
  li.querySelector('.time').textContent = ms === undefined ? '' : `${(ms / 1000).toFixed(1)} s`
  li.querySelector('.detail').textContent = detail ?? ''
}

/** Requests this run sent to the worker, and the clients' latest error answer. */
const seen = { requests: 0, lastError: null }
const pageFetch = window.fetch.bind(window)
// The self-test's own page: its fetch is watched so that a failed step can
// say what the worker answered (the stock client only logs it).
window.fetch = async (input, init) => {
  const url = typeof input === 'string' ? input : input?.url
  if (url !== workerUrl) return pageFetch(input, init)
  seen.requests++
  try {
    const res = await pageFetch(input, init)
    if (!res.ok) seen.lastError = { status: res.status, reason: (await res.clone().text()).slice(0, 300) }
    return res
  } catch (e) {
    seen.lastError = { status: 0, reason: String(e.message || e) }
    throw e
  }
}

/** Polls `check` every `every` ms until truthy, or fails with `why()` after `ms`. */
async function within (ms, check, why, every = 100) {
  const deadline = performance.now() + ms
  for (;;) {
    const value = await check()
    if (value) return value
    if (performance.now() > deadline) throw new StepFailed(why())
    await new Promise(resolve => setTimeout(resolve, every))
  }
}

const lastAnswer = fallback => seen.lastError
  ? adviceFor(seen.lastError.status, seen.lastError.reason)
  : fallback

/** The test's own request to the worker: counted; a network error is a step failure. */
async function ask (path, init) {
  seen.requests++
  try {
    return await pageFetch(workerUrl + path, init)
  } catch (e) {
    throw new StepFailed(adviceFor(0, String(e.message || e)))
  }
}

/** A first poll with a context of its own: the room's members, as the worker lists them. */
async function members (room) {
  const res = await ask('', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ r: room, k: `self-test-observer-${room.slice(0, 22)}` })
  })
  if (!res.ok) throw new StepFailed(adviceFor(res.status, (await res.text()).slice(0, 300)))
  return (await res.json()).ps.map(p => p[0])
}

/**
 * Asks the TURN servers for a relay with these credentials (relay-only ICE
 * gathering, no peer): the relay candidate's protocol and port, or null.
 */
async function relayCandidate (iceServers, ms) {
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' })
  try {
    pc.createDataChannel('turn-probe')
    const found = new Promise(resolve => {
      setTimeout(() => resolve(null), ms)
      pc.onicecandidate = e => {
        const c = e.candidate
        if (!c) resolve(null)
        else if (/ typ relay /.test(c.candidate)) resolve(`${c.protocol ?? 'udp'}, port ${c.port ?? '?'}`)
      }
    })
    await pc.setLocalDescription(await pc.createOffer())
    return await found
  } finally {
    pc.close()
  }
}

/** Makes a stock client with a context id of its own (the client keeps one per tab in history.state). */
function newPeer (name, room) {
  const state = window.history.state
  const { _p2pcfContextId: _, ...rest } = state || {}
  window.history.replaceState(rest, '')
  const peer = new P2PCF(name, room, {
    workerUrl,
    // Both peers are in this page: host candidates are enough, and the
    // test contacts no STUN or TURN server.
    stunIceServers: [],
    turnIceServers: []
  })
  window.history.replaceState(state, '')
  const log = { connected: null, messages: [] }
  peer.on('peerconnect', () => { log.connected ??= performance.now() })
  peer.on('msg', (_from, data) => log.messages.push(new TextDecoder().decode(data)))
  return { peer, log }
}

async function run () {
  const button = $('self-test-run')
  button.disabled = true
  render()
  $('self-test-result').textContent = 'Running…'
  $('self-test-result').dataset.result = 'running'
  seen.requests = 0
  seen.lastError = null
  const random = crypto.getRandomValues(new Uint8Array(6))
  // With signed rooms the page carries a room the worker signed for it.
  const signed = document.querySelector('meta[name="p2pcf-self-test-room"]')?.content
  const room = signed || 'self-test-' + [...random].map(b => b.toString(16).padStart(2, '0')).join('')
  $('self-test-room').textContent = room
  const started = performance.now()
  let current = null
  let a = null
  let b = null
  const step = async (id, fn) => {
    current = id
    mark(id, 'running')
    const t0 = performance.now()
    const detail = await fn()
    mark(id, 'ok', { ms: performance.now() - t0, detail })
  }
  try {
    await step('webrtc', async () => {
      if (typeof RTCPeerConnection !== 'function') throw new StepFailed('This browser has no RTCPeerConnection (WebRTC is off or unsupported).')
      return ''
    })
    await step('reach', async () => {
      const ps = await members(room)
      return `a first poll answered 200 (${ps.length} in the room)`
    })
    await step('join', async () => {
      a = newPeer('self-test-a', room)
      b = newPeer('self-test-b', room)
      a.peer.start()
      b.peer.start()
      await within(20000, () => a.peer.deleteKey && b.peer.deleteKey,
        () => lastAnswer('The peers were not registered within 20 s.'))
      const listed = await members(room)
      if (!listed.includes(a.peer.sessionId) || !listed.includes(b.peer.sessionId)) {
        throw new StepFailed(`Both joins were answered 200, but the worker lists ${listed.length} of the 2 peers.`)
      }
      return 'both entries stored in R2 and listed'
    })
    await step('connect', async () => {
      await within(30000, () => a.log.connected && b.log.connected,
        () => lastAnswer('Signalling worked, but no WebRTC connection opened within 30 s. Check that the browser allows WebRTC (extensions or policies that block it, or hide local addresses).'))
      return ''
    })
    await step('message', async () => {
      const t0 = performance.now()
      a.peer.broadcast(new TextEncoder().encode('ping from A'))
      await within(10000, () => b.log.messages.includes('ping from A'), () => 'B did not receive the message within 10 s.', 5)
      b.peer.broadcast(new TextEncoder().encode('pong from B'))
      await within(10000, () => a.log.messages.includes('pong from B'), () => 'A did not receive the answer within 10 s.', 5)
      return `round trip ${Math.round(performance.now() - t0)} ms`
    })
    await step('leave', async () => {
      a.peer.destroy()
      b.peer.destroy()
      a = b = null
      await within(10000, async () => (await members(room)).length === 0,
        () => lastAnswer('The peers still appear in the room 10 s after leaving.'), 250)
      return 'the worker lists nobody'
    })
    current = 'turn'
    mark('turn', 'running')
    const t0 = performance.now()
    const res = await ask('/turn', signed ? { headers: { 'X-Room': room } } : undefined)
    if (res.status === 404) {
      mark('turn', 'skipped', { detail: 'TURN is not set up on this deployment (optional; INSTALL.md shows how).' })
    } else if (res.ok) {
      const { iceServers, expiresAt } = await res.json()
      const minutes = Math.round((expiresAt - Date.now()) / 60000)
      const relay = await relayCandidate(iceServers, 8000)
      if (!relay) {
        throw new StepFailed(`Credentials were minted (${iceServers.length} server(s), valid ${minutes} min), but no TURN server gave a relay with them within 8 s. Check that TURN_URLS reach your TURN server from this browser and that TURN_SHARED_SECRET is the server's static-auth-secret (coturn then logs a check_stun_auth error), or, with Cloudflare TURN, the key in CF_TURN_KEY_ID.`)
      }
      mark('turn', 'ok', { ms: performance.now() - t0, detail: `a relay allocated (${relay}); credentials valid for ${minutes} min` })
    } else {
      throw new StepFailed(adviceFor(res.status, (await res.text()).slice(0, 300)))
    }
    const total = ((performance.now() - started) / 1000).toFixed(1)
    $('self-test-result').textContent = `Passed in ${total} s: two browsers can connect through this worker (${seen.requests} requests to it).`
    $('self-test-result').dataset.result = 'passed'
  } catch (e) {
    const why = e instanceof StepFailed ? e.message : `The test itself failed: ${e.message || e}`
    if (current) mark(current, 'failed', { detail: why })
    $('self-test-result').textContent = `Failed at “${STEPS.find(s => s[0] === current)?.[1] ?? current}”.`
    $('self-test-result').dataset.result = 'failed'
  } finally {
    // Whatever happened, leave the room.
    a?.peer.destroy()
    b?.peer.destroy()
    button.disabled = false
  }
}

render()
$('self-test-run').addEventListener('click', run)
$('self-test-run').disabled = false
$('self-test-result').textContent = 'Not run yet.'
