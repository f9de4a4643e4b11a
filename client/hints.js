// Makes an unchanged `p2pcf` client follow the polling hints of a p2pcf-rs
// worker: after each signalling step the next poll happens when the worker
// says (fast while peers are connecting, slow in a steady room, idle when
// alone) instead of at the client's own guess.
//
//   import P2PCF from 'p2pcf'
//   import { followHints } from 'p2pcf-rs-client/hints'
//
//   const p2pcf = new P2PCF('client-id', 'room-id', { workerUrl })
//   const hints = followHints(p2pcf)   // before or after p2pcf.start()
//   p2pcf.start()
//   // hints.last: { at, ms, mode } of the latest hint; hints.received: how many
//   // hints.stop(): back to the client's own schedule
//
// What it touches, and nothing else:
// * it reads: a PerformanceObserver for Resource Timing entries. The worker
//   sends each hint as `Server-Timing: p2pcf-hint;desc=<mode>;dur=<ms>` (with
//   `Timing-Allow-Origin`), so the entry of every request to `workerUrl`
//   carries it. Observing changes nothing for anyone else in the page.
// * it writes: the `nextStepTime` property of this one client, made an
//   accessor: the client still sets its own value after every step; reading
//   it gives the hinted time when a hint came with that step's requests, and
//   the client's own value otherwise (errors, a worker without hints).
// No global is replaced: `fetch`, `Response` and other clients are left as
// they are. Needs Resource Timing's `serverTiming`: every current browser,
// in secure contexts (https, or http on localhost); elsewhere nothing changes.

const METRIC = 'p2pcf-hint'

export function followHints (client) {
  // Resource Timing names an entry by its resolved URL (`https://w.example/`).
  const workerUrl = new URL(client.workerUrl, globalThis.location?.href).href
  let own = client.nextStepTime // the client's latest own schedule
  let ownSetAt = -Infinity // when the client set it (performance.now())
  let previousSetAt = -Infinity // and the time before that
  let latest = null // { at, ms, mode, end }: end is the response's end (performance.now())
  let received = 0

  const take = entry => {
    if (entry.name !== workerUrl || !entry.serverTiming) return
    const metric = entry.serverTiming.find(m => m.name === METRIC)
    if (!metric) return
    // In the client's clock (Date.now), which can drift from the monotonic
    // one Resource Timing uses (sleep, clock adjustments).
    const at = Math.round(Date.now() - (performance.now() - entry.responseEnd))
    latest = { at, ms: metric.duration, mode: metric.description, end: entry.responseEnd }
    received++
  }
  const observer = typeof PerformanceObserver === 'function'
    ? new PerformanceObserver(list => list.getEntries().forEach(take))
    : null
  observer?.observe({ type: 'resource' })

  // A hint belongs to the step the client last scheduled (or to one in
  // flight) when its response ended after the schedule before that.
  const hinted = () => latest !== null && latest.end > previousSetAt

  Object.defineProperty(client, 'nextStepTime', {
    configurable: true,
    enumerable: true,
    get () {
      if (client.finished || !hinted()) return own
      return latest.at + latest.ms
    },
    set (value) {
      own = value
      previousSetAt = ownSetAt
      ownSetAt = performance.now()
    }
  })

  return {
    get last () { return latest && { at: latest.at, ms: latest.ms, mode: latest.mode } },
    get received () { return received },
    stop () {
      observer?.disconnect()
      delete client.nextStepTime
      client.nextStepTime = own
    }
  }
}
