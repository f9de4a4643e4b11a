// The y-webrtc test page: an unchanged y-webrtc WebrtcProvider syncing a
// Yjs document, signalled through `signaling` (the worker's /y-webrtc/...
// or y-webrtc's own bin/server.js). `defer=1`: the test calls begin().
import * as Y from 'yjs'
import { WebrtcProvider } from 'y-webrtc'

const params = new URLSearchParams(location.search)
const t0 = performance.now()
const doc = new Y.Doc()
const text = doc.getText('shared')
const events = (window.events = [])
text.observe(() => events.push(['text', text.toString(), Math.round(performance.now() - t0)]))
window.t0Wall = performance.timeOrigin + t0

window.begin = () => {
  window.startedAt = Math.round(performance.now() - t0)
  const provider = new WebrtcProvider(params.get('room'), doc, {
    signaling: [params.get('signaling')],
    password: params.get('password') || null
  })
  provider.awareness.setLocalStateField('name', params.get('name'))
  window.provider = provider
}
window.type = s => text.insert(text.length, s)
window.text = () => text.toString()
/** The names in this page's awareness (its own included). */
window.names = () => [...window.provider.awareness.getStates().values()].map(s => s.name).filter(Boolean).sort()
if (!params.get('defer')) window.begin()
