import type { BaseRoomConfig, JoinRoomCallbacks, Room } from '@trystero-p2p/core'

/** Trystero's room config, with where the worker is. */
export type WorkerRoomConfig = BaseRoomConfig & {
  /** The worker's address, e.g. `https://signal.example.workers.dev`. */
  workerUrl: string
  /**
   * The worker namespace (`/y-webrtc/<namespace>`, one Durable Object) to
   * use: 4-64 of `[A-Za-z0-9_-]`, e.g. a room id signed with `ROOM_SECRET`.
   * Default: the appId if it is one, else a hash of it.
   */
  namespace?: string
}

/**
 * Joins a Trystero room signalled through a p2pcf-rs worker; returns a
 * standard Trystero room (`makeAction`, `onPeerJoin`, `onPeerLeave`,
 * `addStream`, `getPeers`, `ping`, `leave`, ...).
 */
export function joinRoom (config: WorkerRoomConfig, roomId: string, callbacks?: JoinRoomCallbacks): Room

/** This page's Trystero peer id. */
export const selfId: string

/** The worker sockets in use, by URL. */
export function getRelaySockets (): Record<string, WebSocket>
