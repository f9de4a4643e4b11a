// PeerJS's own server (`peer` 1.0.2, from node_modules) in a child process
// on 127.0.0.1 at path /peerjs: what the PeerJS browser test and
// bench/peerjs-latency.mjs time the worker against.
import { spawn } from 'node:child_process'
import net from 'node:net'
import { freePort, until } from './support.mjs'

/** Returns { port, stop }. */
export async function startPeerServer () {
  const port = await freePort()
  const script = "import { PeerServer } from 'peer'; PeerServer({ host: '127.0.0.1', port: Number(process.env.PORT), path: '/peerjs' })"
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    cwd: new URL('../..', import.meta.url).pathname,
    env: { ...process.env, PORT: String(port) },
    stdio: 'ignore'
  })
  await until('peer server listening', () => new Promise(resolve => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
    socket.on('error', () => resolve(false))
  }), 15000)
  return { port, stop: () => child.kill() }
}
