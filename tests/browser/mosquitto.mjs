// Debian's mosquitto on 127.0.0.1 (TCP, no persistence, anonymous) behind
// a WebSocket listener on 127.0.0.1 that pipes each socket to it: the MQTT
// broker Trystero's own MQTT strategy is timed against in the Trystero
// browser test. (mosquitto 2.0.11's own WebSocket listener binds every
// interface whatever address it is given; test servers bind loopback only.)
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WebSocketServer, createWebSocketStream } from 'ws'
import { freePort, until } from './support.mjs'

/** Returns { url, stop }. */
export async function startMosquitto () {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'mosquitto-'))
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'log_dest none', ''].join('\n'))
  const child = spawn(existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto', ['-c', conf], { stdio: 'ignore' })
  await until('mosquitto listening', () => new Promise(resolve => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
    socket.on('error', () => resolve(false))
  }), 15000)
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: protocols => protocols.has('mqtt') ? 'mqtt' : false })
  wss.on('connection', ws => {
    const stream = createWebSocketStream(ws)
    const tcp = net.connect(port, '127.0.0.1')
    tcp.setNoDelay(true)
    stream.pipe(tcp).pipe(stream)
    const end = () => { tcp.destroy(); ws.terminate() }
    stream.on('error', end)
    tcp.on('error', end)
    tcp.on('close', end)
  })
  await new Promise(resolve => wss.on('listening', resolve))
  return {
    url: `ws://127.0.0.1:${wss.address().port}/mqtt`,
    stop: () => { wss.close(); child.kill(); rmSync(dir, { recursive: true, force: true }) }
  }
}
