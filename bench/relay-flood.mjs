// A relay room flooded by its members, measured on the built worker in
// workerd (miniflare, local R2): N members each send R requests of three
// 16 KiB broadcasts, then a newcomer joins and polls, and an old member
// polls until it has every stored message. Prints what the flood cost the
// others: the newcomer's poll time and answer size, and the old member's
// polls. (Issue 17's measurement, runnable against any build.)
//
//   bash scripts/build-worker.sh && node bench/relay-flood.mjs [members] [requests]
import { startWorker } from '../tests/workerd/harness.mjs'

const MEMBERS = Number(process.argv[2] || 16)
const REQUESTS = Number(process.argv[3] || 8)

// The R2 host (no RELAY_ROOMS binding): what issue 17 measured.
const worker = await startWorker({ push: false })
const call = async body => {
  const started = performance.now()
  const res = await fetch(`${worker.url}/relay/v1`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body)
  })
  const text = await res.text()
  return { status: res.status, text, ms: performance.now() - started }
}
const room = `relay-flood-${Date.now()}`
try {
  const members = []
  for (let i = 0; i < MEMBERS + 1; i++) {
    const r = await call({ room })
    members.push({ ...JSON.parse(r.text), seq: 0 })
  }
  const [old, ...flooders] = members
  const big = 'x'.repeat(16 * 1024 - 2)
  const statuses = {}
  const floodStarted = performance.now()
  for (const m of flooders) {
    for (let r = 0; r < REQUESTS; r++) {
      const send = [1, 2, 3].map(() => ({ to: '*', seq: ++m.seq, data: big }))
      const res = await call({ room, id: m.id, token: m.token, send })
      statuses[res.status] = (statuses[res.status] || 0) + 1
      if (res.status !== 200) m.seq -= 3
    }
  }
  const floodSeconds = (performance.now() - floodStarted) / 1000
  const newcomer = JSON.parse((await call({ room })).text)
  const polls = []
  for (let i = 0; i < 3; i++) {
    polls.push(await call({ room, id: newcomer.id, token: newcomer.token }))
  }
  // The old member takes everything, poll after poll.
  const after = {}
  let messages = 0
  let bytes = 0
  let slowest = 0
  let rounds = 0
  const expected = statuses[200] * 3
  const takeStarted = performance.now()
  for (; rounds < 60 && messages < expected; rounds++) {
    const r = await call({ room, id: old.id, token: old.token, after })
    const answer = JSON.parse(r.text)
    bytes += r.text.length
    slowest = Math.max(slowest, r.ms)
    for (const m of answer.messages) after[m.from] = m.seq
    messages += answer.messages.length
    // As SignalRelay does: at once when `more`, else after the hint.
    if (!answer.more) await new Promise(resolve => setTimeout(resolve, answer.hint.ms))
  }
  const fmt = n => n.toFixed(0)
  console.log(`relay flood: ${MEMBERS} members x ${REQUESTS} requests x 3 x 16 KiB broadcasts; answers ${JSON.stringify(statuses)} in ${floodSeconds.toFixed(1)} s`)
  console.log(`  newcomer's polls: ${polls.map(p => `${fmt(p.ms)} ms, ${p.text.length} bytes`).join('; ')}`)
  const took = ((performance.now() - takeStarted) / 1000).toFixed(1)
  console.log(`  an old member took ${messages} of ${expected} messages in ${rounds} polls (${took} s), ${(bytes / 1e6).toFixed(2)} MB in all, slowest poll ${fmt(slowest)} ms`)
} finally {
  await worker.stop()
}
