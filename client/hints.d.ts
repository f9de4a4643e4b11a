/** The parts of a stock p2pcf client this helper uses. */
export interface HintsTarget {
  workerUrl: string
  nextStepTime: number
  finished?: boolean
}

/** A polling hint as the worker sent it. */
export interface PollHint {
  /** When the response carrying it ended (ms since the epoch). */
  at: number
  /** Delay until the next poll, from `at`. */
  ms: number
  mode: 'fast' | 'slow' | 'idle'
}

export interface Hints {
  /** The latest hint, or null before the first. */
  readonly last: PollHint | null
  /** How many hints arrived. */
  readonly received: number
  /** Back to the client's own schedule. */
  stop (): void
}

/**
 * Makes a stock p2pcf client poll when the worker's hints say. Observes
 * Resource Timing (the worker's `Server-Timing` header) and makes the
 * client's `nextStepTime` an accessor; replaces no global.
 */
export function followHints (client: HintsTarget): Hints
