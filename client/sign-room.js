// Signs a room id for a p2pcf-rs deployment with signed rooms (ROOM_SECRET).
// For the app's backend or a build step, never for a page: whoever holds the
// secret can sign any room. No dependencies (WebCrypto: Node 20+, Deno,
// Workers, browsers).
//
//   import { signRoom } from 'p2pcf-rs-client/sign-room'
//   const roomId = await signRoom('team-chat', process.env.ROOM_SECRET, { expiresInS: 86400 })
//   // hand roomId to the page; new P2PCF(clientId, roomId, { workerUrl })

const MAC_CHARS = 16

/**
 * The signed id `<name>_<expiry>_<mac>`: `name` (1-36 of [A-Za-z0-9_-]),
 * the expiry in Unix seconds (10 digits), and the first 16 characters of
 * base64url(HMAC-SHA1(secret, "<name>_<expiry>")). Served until the expiry.
 */
export async function signRoom (name, secret, { expiresInS = 86400, now = Date.now() } = {}) {
  if (!/^[A-Za-z0-9_-]{1,36}$/.test(name)) throw new Error('signRoom: the name must be 1-36 of [A-Za-z0-9_-]')
  if (!secret) throw new Error('signRoom: no secret')
  const expiry = String(Math.floor(now / 1000) + Math.floor(expiresInS)).padStart(10, '0')
  if (expiry.length !== 10) throw new Error('signRoom: expiry out of range')
  const signed = `${name}_${expiry}`
  const enc = new TextEncoder()
  const key = await globalThis.crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-1' }, false, ['sign'])
  const mac = new Uint8Array(await globalThis.crypto.subtle.sign('HMAC', key, enc.encode(signed)))
  const b64 = btoa(String.fromCharCode(...mac)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
  return `${signed}_${b64.slice(0, MAC_CHARS)}`
}
