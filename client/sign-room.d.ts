/**
 * Signs a room id for a deployment with signed rooms (`ROOM_SECRET`): for
 * the app's backend or a build step, never a page. The id is
 * `<name>_<expiry>_<mac>`, a room id the stock p2pcf client takes as is.
 */
export function signRoom (
  name: string,
  secret: string,
  options?: {
    /** How long the id is served, from `now` (default 86400 s). */
    expiresInS?: number
    /** Ms since the epoch (default `Date.now()`). */
    now?: number
  }
): Promise<string>
