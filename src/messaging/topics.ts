import { ErrorCode } from "../wire/index.ts";
import { receiptSeq } from "./device-queue.ts";
import type { Device, EngineEnv, EngineParts, TopicsPart } from "./engine-parts.ts";
import { MessagingError } from "./errors.ts";
import type { LinkState } from "./link-state.ts";
import { checkedTopic } from "./publish-request.ts";
import { TopicIndex } from "./topic-index.ts";
import { wireErrorCode } from "./wire-errors.ts";

type RegistryRecord = { readonly revoked: boolean; readonly topics: readonly string[] };

/**
 * Topics and the registry's view of devices: the devices' own subscriptions
 * (Subscribe/Unsubscribe, stored), the topics the registry assigns, which
 * devices are registered and revoked, and what a registry change does to a
 * device's queue and session.
 */
export class Topics implements TopicsPart {
  private readonly env: EngineEnv;
  private readonly parts: EngineParts;
  /** topic -> devices subscribed by themselves */
  private readonly ownSubscribers = new TopicIndex();
  /** topic -> devices the registry assigns it to */
  private readonly assignedSubscribers = new TopicIndex();
  /** registered devices (from the registry at start, then its change events) -> revoked */
  private readonly revoked = new Map<string, boolean>();

  constructor(env: EngineEnv, parts: EngineParts) {
    this.env = env;
    this.parts = parts;
  }

  /** A subscription the store holds (at start). */
  loadSubscription(device: string, topic: string): void {
    this.subscriptionChanged(device, topic, true);
  }

  /** Another node's change of a device's own subscription (shared stores). */
  subscriptionChanged(device: string, topic: string, subscribed: boolean): void {
    const q = this.env.devices.queue(device);
    if (subscribed) {
      q.subscribe(topic);
      this.ownSubscribers.add(topic, device);
    } else {
      q.unsubscribe(topic);
      this.ownSubscribers.remove(topic, device);
    }
  }

  /** Every device's own subscriptions as the store has them now (shared stores, after events may have been missed). */
  reloadSubscriptions(subscriptions: readonly { readonly device: string; readonly topic: string }[]): void {
    const stored = new Set(subscriptions.map((s) => `${s.device}\u0000${s.topic}`));
    for (const q of this.env.devices.values()) {
      for (const t of [...q.subscriptions]) if (!stored.has(`${q.id}\u0000${t}`)) this.subscriptionChanged(q.id, t, false);
    }
    for (const s of subscriptions) this.subscriptionChanged(s.device, s.topic, true);
  }

  /** A registered device (at start). */
  loadRegistered(id: string, record: RegistryRecord): void {
    this.revoked.set(id, record.revoked);
    this.assignTopics(id, record.revoked ? [] : record.topics);
  }

  revokedState(device: string): boolean | undefined {
    return this.revoked.get(device);
  }

  subscribe(ls: LinkState, dev: Device, requestId: number, topics: readonly string[], add: boolean): void {
    const { options, observer } = this.env;
    const { turn } = this.parts;
    try {
      const most = this.requestTopicLimit();
      if (topics.length > most) {
        observer.frameRefused("subscribe_too_long");
        throw new MessagingError("too_many_topics", `a Subscribe or Unsubscribe lists at most ${most} topics, this one ${topics.length}`);
      }
      const checked = topics.map(checkedTopic);
      if (add) {
        const after = new Set([...dev.subscriptions, ...checked]);
        if (after.size > options.maxTopics) {
          throw new MessagingError("too_many_topics", `a device may subscribe to at most ${options.maxTopics} topics`);
        }
      }
      for (const t of checked) {
        if (add === dev.subscriptions.has(t)) continue;
        if (add) {
          dev.subscribe(t);
          this.ownSubscribers.add(t, dev.id);
          turn.batch.addSubscription({ device: dev.id, topic: t }, true);
        } else {
          dev.unsubscribe(t);
          this.ownSubscribers.remove(t, dev.id);
          turn.batch.addSubscription({ device: dev.id, topic: t }, false);
        }
      }
      turn.send(ls, { kind: "subscribed", subscribed: { requestId, topics: this.topicsOf(dev) } });
    } catch (e) {
      // anything but a refusal of the request is a failure of this session (see receive)
      if (!(e instanceof MessagingError)) throw e;
      if (e.code !== "too_many_topics" || topics.length <= this.requestTopicLimit()) observer.frameRefused("subscribe_invalid");
      turn.send(ls, {
        kind: "subscribed",
        subscribed: { requestId, topics: this.topicsOf(dev), error: { code: wireErrorCode(e), message: e.message, requestId } },
      });
    }
  }

  /** Topics one Subscribe or Unsubscribe may list: maxTopics, and at least 100 (so an Unsubscribe can clear old ones). */
  private requestTopicLimit(): number {
    return Math.max(this.env.options.maxTopics, 100);
  }

  topicsOf(dev: Device): string[] {
    return [...new Set([...dev.registryTopics, ...dev.subscriptions])].sort();
  }

  subscribersOf(topic: string): string[] {
    const out = new Set<string>();
    for (const d of this.ownSubscribers.devices(topic)) out.add(d);
    for (const d of this.assignedSubscribers.devices(topic)) out.add(d);
    const enabled: string[] = [];
    for (const d of out) if (this.revoked.get(d) === false) enabled.push(d);
    return enabled.sort();
  }

  private assignTopics(id: string, topics: readonly string[]): void {
    const q = this.env.devices.queue(id);
    for (const t of q.registryTopics) this.assignedSubscribers.remove(t, id);
    q.registryTopics = [...topics];
    for (const t of topics) this.assignedSubscribers.add(t, id);
  }

  /** The registry's change event (a device added, updated, revoked or removed). */
  registryChanged(id: string, record: RegistryRecord | undefined): void {
    try {
      this.applyRegistryChange(id, record);
    } catch (e) {
      // the registry's caller (an admin request) is not failed for the engine's trouble with one device
      const link = this.env.devices.get(id)?.link;
      if (link === undefined) this.env.reportFailure("device", id, e);
      else this.parts.sessions.failDevice(link, id, e);
    }
  }

  private applyRegistryChange(id: string, record: RegistryRecord | undefined): void {
    const { devices, timers, clock } = this.env;
    const { sessions, turn } = this.parts;
    const now = clock.now();
    const q = devices.get(id);
    if (record === undefined) this.revoked.delete(id);
    else this.revoked.set(id, record.revoked);
    if (record === undefined) {
      // removed: its queue goes (the store deleted its deliveries)
      if (q === undefined) return;
      if (q.link !== undefined) sessions.bye(q.link, ErrorCode.DEVICE_UNKNOWN, `device ${id} was removed`);
      for (const e of [...q.byMessage.values()]) {
        timers.cancel(e);
        if (e.state !== "tombstone") turn.receipt(e.message, id, "rejected", now, "device_removed", receiptSeq(e));
      }
      for (const t of q.subscriptions) this.ownSubscribers.remove(t, id);
      for (const t of q.registryTopics) this.assignedSubscribers.remove(t, id);
      timers.cancel(q);
      devices.delete(id);
      turn.wake();
      return;
    }
    this.assignTopics(id, record.revoked ? [] : record.topics);
    if (record.revoked && q?.link !== undefined) {
      sessions.bye(q.link, ErrorCode.DEVICE_REVOKED, `device ${id} was revoked`);
      turn.wake();
    }
  }
}
