/**
 * Retransmission timeout from round-trip samples, RFC 6298 style:
 * SRTT/RTTVAR smoothing (alpha 1/8, beta 1/4), RTO = SRTT + max(G, 4*RTTVAR),
 * clamped to [minRto, maxRto]. Samples come only from pushes sent once (Karn's
 * rule is the caller's). Backoff doubles per retransmission of the same push.
 */
export interface RttOptions {
  /** RTO before the first sample, ms (RFC 6298: 1 s) */
  readonly initialRto: number;
  /** lower bound, ms */
  readonly minRto: number;
  /** upper bound, ms (also caps backoff) */
  readonly maxRto: number;
  /** clock granularity G, ms */
  readonly granularity: number;
  /**
   * Backoff stops doubling here (unless the RTO itself is larger), ms. RFC 6298
   * lets backoff reach 60 s; on a lossy radio link a push whose copies were
   * lost a few times in a row would then wait a minute, so dtlspush caps it
   * lower: a retransmission is one small record.
   */
  readonly maxBackoff: number;
}

export const DEFAULT_RTT_OPTIONS: RttOptions = { initialRto: 1000, minRto: 200, maxRto: 60_000, granularity: 1, maxBackoff: 10_000 };

export class RttEstimator {
  private srtt: number | undefined;
  private rttvar = 0;
  private rtoMs: number;
  private readonly options: RttOptions;

  constructor(options: RttOptions = DEFAULT_RTT_OPTIONS) {
    this.options = options;
    this.rtoMs = options.initialRto;
  }

  /** Smoothed RTT, ms (undefined before the first sample). */
  get smoothed(): number | undefined {
    return this.srtt;
  }

  get variance(): number {
    return this.rttvar;
  }

  /** The current base RTO, ms. */
  get rto(): number {
    return this.rtoMs;
  }

  sample(rttMs: number): void {
    const r = Math.max(0, rttMs);
    if (this.srtt === undefined) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    const { minRto, maxRto, granularity } = this.options;
    this.rtoMs = Math.min(maxRto, Math.max(minRto, this.srtt + Math.max(granularity, 4 * this.rttvar)));
  }

  /**
   * The timeout for a push already sent `transmissions` times: RTO doubled per
   * retransmission, capped at maxRto, then spread by +-jitter (0..1) using
   * `random` in [0, 1).
   */
  timeout(transmissions: number, jitter: number, random: number): number {
    const doubled = this.rtoMs * 2 ** Math.min(Math.max(0, transmissions - 1), 16);
    const base = Math.min(this.options.maxRto, Math.max(this.rtoMs, this.options.maxBackoff), doubled);
    return Math.max(1, Math.round(base * (1 + jitter * (2 * random - 1))));
  }
}
