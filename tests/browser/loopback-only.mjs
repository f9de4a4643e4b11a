// Preloaded (`node --import`) into a third-party server that listens on
// every interface (y-webrtc's bin/server.js): its listen() binds 127.0.0.1.
import http from 'node:http'

const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (port, ...rest) {
  if (typeof port === 'number' || typeof port === 'string') {
    const callback = rest.find(a => typeof a === 'function')
    return listen.call(this, Number(port), '127.0.0.1', callback)
  }
  return listen.call(this, port, ...rest)
}
