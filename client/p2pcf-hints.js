// Makes an unchanged `p2pcf` client follow the polling hints of a p2pcf-rs
// worker: after each signalling step, the next poll is scheduled when the
// worker's `X-Poll-Hint` header says (fast while peers are connecting, slow
// in a steady room, idle when alone), instead of the client's own guess.
//
//   import P2PCF from 'p2pcf'
//   import { followHints } from './p2pcf-hints.js'
//
//   const p2pcf = new P2PCF('client-id', 'room-id', { workerUrl })
//   const hints = followHints(p2pcf)   // before p2pcf.start()
//   p2pcf.start()
//   // hints.last: { at, ms, mode } of the latest hint; hints.received: how many
//   // hints.stop(): back to the client's own schedule
//
// It wraps `fetch` (to read the header of responses from `workerUrl`) and the
// instance's `_step` (to set `nextStepTime` after the client has set its
// own). Against a worker without hints nothing changes.

export function followHints (client) {
  const workerUrl = client.workerUrl
  const originalFetch = globalThis.fetch
  const originalStep = client._step
  let latest = null
  let received = 0

  globalThis.fetch = async function (input, init) {
    const response = await originalFetch.call(globalThis, input, init)
    const url = typeof input === 'string' ? input : input?.url
    if (url === workerUrl) {
      const header = response.headers.get('X-Poll-Hint') || ''
      const ms = /(?:^|;)\s*ms=(\d+)/.exec(header)
      if (ms) {
        latest = { at: Date.now(), ms: Number(ms[1]), mode: header.split(';')[0].trim() }
        received++
      }
    }
    return response
  }

  client._step = async (finish = false) => {
    const before = received
    await originalStep(finish)
    if (!finish && !client.finished && latest && received !== before) {
      client.nextStepTime = latest.at + latest.ms
    }
  }

  return {
    get last () { return latest },
    get received () { return received },
    stop () {
      globalThis.fetch = originalFetch
      client._step = originalStep
    }
  }
}
