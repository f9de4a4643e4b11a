// The relay API in real Chromium: three pages build a simple-peer 9.11.1
// full mesh (trickle ICE on) signalled only through client/relay.js and the
// built worker, exchange data both ways, and when one leaves the others see
// it go (the relay's leave and the data channel's close); three pages form
// a @mattkrick/fast-rtc-swarm 0.4.1 swarm the same way.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startWorker } from '../workerd/harness.mjs'
import { startBrowser, until } from './support.mjs'

let worker, chromium

before(async () => {
  worker = await startWorker()
  chromium = await startBrowser()
})

after(async () => {
  await chromium?.stop()
  await worker?.stop()
})

test('three simple-peer browsers form a mesh through the relay, talk, and see one leave', async () => {
  const room = `relay-mesh-${Date.now()}`
  const started = Date.now()
  const names = ['ann', 'bob', 'cy']
  const pages = []
  for (const name of names) pages.push(await chromium.openClient({ worker: worker.url, room, name }, '/relay'))
  const eventsOf = p => p.page.evaluate(() => window.events)
  const connectedTo = async p => (await eventsOf(p)).filter(e => e[0] === 'connect').map(e => e[1])
  await until('a full mesh', async () => {
    for (const p of pages) if ((await connectedTo(p)).length < 2) return false
    return true
  }, 60000)
  console.log(`three simple-peer browsers in a full mesh through the relay in ${Date.now() - started} ms`)
  const ids = await Promise.all(pages.map(p => p.page.evaluate(() => window.relay.id)))
  for (const [i, p] of pages.entries()) {
    const others = ids.filter((_, j) => j !== i).sort()
    assert.deepEqual((await connectedTo(p)).sort(), others)
    const errors = (await eventsOf(p)).filter(e => e[0] === 'error')
    assert.deepEqual(errors, [])
  }
  // Data both ways on every link.
  for (const [i, p] of pages.entries()) await p.page.evaluate(t => window.sendAll(t), `hello from ${names[i]}`)
  for (const [i, p] of pages.entries()) {
    const got = await until(`${names[i]} receives`, async () => {
      const r = await p.page.evaluate(() => window.received)
      return r.length >= 2 && r
    })
    assert.deepEqual(got.map(([, text]) => text).sort(), names.filter((_, j) => j !== i).map(n => `hello from ${n}`).sort())
  }
  // cy leaves (pagehide: the relay's keepalive leave); ann and bob see it go.
  await pages[2].page.close({ runBeforeUnload: true })
  await pages[2].context.close()
  for (const p of pages.slice(0, 2)) {
    await until('leave of cy', async () => (await eventsOf(p)).some(e => e[0] === 'leave' && e[1] === ids[2]), 20000)
    await until('close of the link to cy', async () => (await eventsOf(p)).some(e => e[0] === 'close' && e[1] === ids[2]), 20000)
  }
  const left = await pages[0].page.evaluate(() => [...window.relay.peers.keys()])
  assert.deepEqual(left, [ids[1]])
  for (const p of pages.slice(0, 2)) await p.context.close()
})

test('three fast-rtc-swarm browsers form the swarm through the relay and exchange data', async () => {
  const room = `relay-swarm-${Date.now()}`
  const started = Date.now()
  const pages = []
  for (let i = 0; i < 3; i++) pages.push(await chromium.openClient({ worker: worker.url, room, name: `swarm-${i}` }, '/swarm'))
  const eventsOf = p => p.page.evaluate(() => window.events)
  await until('the swarm', async () => {
    for (const p of pages) if ((await eventsOf(p)).filter(e => e[0] === 'open').length < 2) return false
    return true
  }, 60000).catch(async err => {
    for (const p of pages) console.log(JSON.stringify(await eventsOf(p)))
    throw err
  })
  console.log(`three fast-rtc-swarm browsers in a swarm through the relay in ${Date.now() - started} ms`)
  const ids = await Promise.all(pages.map(p => p.page.evaluate(() => window.relay.id)))
  for (const [i, p] of pages.entries()) {
    const userIds = (await eventsOf(p)).filter(e => e[0] === 'open').map(e => e[2]).sort()
    assert.deepEqual(userIds, ids.filter((_, j) => j !== i).sort(), 'connected to each other member, once')
    await p.page.evaluate(t => window.swarm.broadcast(t), `swarm hello ${i}`)
  }
  for (const [i, p] of pages.entries()) {
    const got = await until(`member ${i} receives`, async () => {
      const r = await p.page.evaluate(() => window.received)
      return r.length >= 2 && r
    })
    assert.deepEqual([...got].sort(), [0, 1, 2].filter(j => j !== i).map(j => `swarm hello ${j}`))
  }
  for (const p of pages) await p.context.close()
})
