// client/ is an installable package: `npm pack` makes a tarball with every
// module and declaration its `exports` map names, and an app that installs
// the tarball imports each entry point by its package name.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const clientDir = new URL('../../client/', import.meta.url).pathname
const pkg = JSON.parse(readFileSync(join(clientDir, 'package.json'), 'utf8'))
const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' } })

test('npm pack: the tarball holds every entry point, its declarations and the README', () => {
  const [packed] = JSON.parse(npm(['pack', '--dry-run', '--json', clientDir], tmpdir()))
  const files = new Set(packed.files.map(f => f.path))
  for (const [entry, target] of Object.entries(pkg.exports)) {
    for (const file of typeof target === 'string' ? [target] : Object.values(target)) {
      assert.ok(files.has(file.replace(/^\.\//, '')), `${entry}: ${file} is in the tarball`)
    }
  }
  assert.ok(files.has('README.md'))
  assert.deepEqual([...files].filter(f => !/\.(js|d\.ts|md|json)$/.test(f)), [], 'nothing else')
})

test('an app installs the tarball and imports every entry point by name', async () => {
  const app = mkdtempSync(join(tmpdir(), 'p2pcf-rs-client-app-'))
  try {
    const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', app, clientDir], app))
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }))
    npm(['install', '--offline', '--no-save', join(app, packed.filename)], app)
    const probe = `
      import * as all from 'p2pcf-rs-client'
      import { SignalRelay } from 'p2pcf-rs-client/relay'
      import { useTurnCredentials, fetchTurnCredentials } from 'p2pcf-rs-client/turn'
      import { followHints } from 'p2pcf-rs-client/hints'
      import { peerMessageSignal } from 'p2pcf-rs-client/peer-message'
      import { swarmOverRelay } from 'p2pcf-rs-client/fast-rtc-swarm'
      import { signRoom } from 'p2pcf-rs-client/sign-room'
      if (typeof signRoom !== 'function' || all.signRoom) throw new Error('signRoom: its own entry, not in the browser index')
      const named = { SignalRelay, useTurnCredentials, fetchTurnCredentials, followHints, peerMessageSignal, swarmOverRelay }
      for (const [name, value] of Object.entries(named)) {
        if (typeof value !== 'function' || all[name] !== value) throw new Error(name)
      }
      console.log(Object.keys(all).sort().join(','))
    `
    writeFileSync(join(app, 'probe.mjs'), probe)
    const out = execFileSync(process.execPath, ['probe.mjs'], { cwd: app, encoding: 'utf8' })
    assert.equal(out.trim(), 'SignalRelay,fetchTurnCredentials,followHints,peerMessageSignal,swarmOverRelay,useTurnCredentials')
  } finally {
    rmSync(app, { recursive: true, force: true })
  }
})
