/**
 * Coalesced acks (PROTOCOL.md §4.9, §11.3), the twin of the reference SDK's
 * (gchat/client/sdk.py): a delivery is acked once it is stored, together
 * with every other delivery handled since the last ack, in one `ack` frame.
 * The frame goes when no pushed frame is left to handle, or when `limit`
 * positions wait. A backlog then costs the node a few ack frames instead of
 * one per envelope, and the app never waits for a frame while it holds
 * acks, so the server's window (most envelopes pushed and not acked) cannot
 * stay shut.
 */

/** Most positions in one `ack` (the protocol allows 1000): a quarter of the default window. */
export const ACK_BATCH = 64;

export class Acks {
  private positions: number[] = [];

  constructor(private readonly send: (positions: number[]) => void, private readonly limit = ACK_BATCH) {}

  /** This delivery is stored (or was seen before): its position goes with the next ack. */
  handled(position: number): void {
    this.positions.push(position);
  }

  /** A pushed frame is handled; `more` says whether others wait. Sends the ack when due. */
  settle(more: boolean): void {
    if (this.positions.length > 0 && (!more || this.positions.length >= this.limit)) this.flush();
  }

  /** Ack everything handled so far, in one frame. */
  flush(): void {
    if (this.positions.length === 0) return;
    const positions = this.positions;
    this.positions = [];
    this.send(positions);
  }

  /** Forget what was handled on a connection that is gone (the server pushes it again). */
  clear(): void {
    this.positions = [];
  }
}
