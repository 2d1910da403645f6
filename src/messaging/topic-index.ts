/** topic -> devices, with empty topics dropped. */
export class TopicIndex {
  private readonly byTopic = new Map<string, Set<string>>();

  add(topic: string, device: string): void {
    let set = this.byTopic.get(topic);
    if (set === undefined) this.byTopic.set(topic, (set = new Set()));
    set.add(device);
  }

  remove(topic: string, device: string): void {
    const set = this.byTopic.get(topic);
    if (set === undefined) return;
    set.delete(device);
    if (set.size === 0) this.byTopic.delete(topic);
  }

  devices(topic: string): ReadonlySet<string> {
    return this.byTopic.get(topic) ?? EMPTY;
  }
}

const EMPTY: ReadonlySet<string> = new Set();
