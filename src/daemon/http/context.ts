import type { Store } from "../../store/types.ts";
import type { ClusterStore } from "../../store/cluster-types.ts";
import type { PushServer } from "../push-server.ts";
import type { Guard } from "./auth.ts";

/** What the route modules share. */
export interface RouteContext {
  readonly server: PushServer;
  readonly store: Store;
  readonly guard: Guard;
  readonly clock: { now(): number };
  /** the shared store's cluster side; undefined on one node */
  readonly cluster: ClusterStore | undefined;
}
