// The stock client ships no types: just what types-check.ts uses.
declare module 'p2pcf' {
  export default class P2PCF {
    constructor (clientId: string, roomId: string, options?: { workerUrl?: string, stunIceServers?: RTCIceServer[], turnIceServers?: RTCIceServer[] })
    workerUrl: string
    nextStepTime: number
    finished: boolean
    stunIceServers: RTCIceServer[]
    turnIceServers: RTCIceServer[]
    start (): Promise<void>
  }
}
