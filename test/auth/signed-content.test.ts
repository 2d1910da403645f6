import { describe, expect, it } from "vitest";
import { signedContent, type SignedFields } from "../../src/auth/signed-content.ts";
import { toHex } from "../../src/util/bytes.ts";

/** The known-answer input; a C implementation can check itself against KNOWN_HEX. */
const KNOWN_FIELDS: SignedFields = {
  messageId: "msg-é",
  topic: "",
  device: "dev-1",
  contentType: "text/plain",
  publisher: "ops",
  collapseKey: "k",
  payload: Uint8Array.of(0x00, 0x01, 0xff),
  createdAt: 1_700_000_000_000,
  expiresAt: 1_700_000_060_000,
  priority: 5,
};

// Computed by hand, field by field (u32 big-endian lengths, u64 times, u32 priority).
const KNOWN_HEX = [
  "00000013",
  "64746c73707573682d636f6e74656e742d7631", // "dtlspush-content-v1"
  "00000006",
  "6d73672dc3a9", // message_id "msg-é" (é = c3 a9)
  "00000000", // topic ""
  "00000005",
  "6465762d31", // device "dev-1"
  "0000000a",
  "746578742f706c61696e", // content_type "text/plain"
  "00000003",
  "6f7073", // publisher "ops"
  "00000001",
  "6b", // collapse_key "k"
  "00000003",
  "0001ff", // payload
  "0000018bcfe56800", // created_at 1700000000000 = 0x18b_cfe56800
  "0000018bcfe65260", // expires_at 1700000060000 = created_at + 0xea60
  "00000005", // priority
].join("");

describe("signedContent", () => {
  it("encodes the known-answer input to the hand-computed bytes", () => {
    expect(toHex(signedContent(KNOWN_FIELDS))).toBe(KNOWN_HEX);
  });

  it("encodes large times and priorities exactly", () => {
    const bytes = signedContent({ ...KNOWN_FIELDS, createdAt: Number.MAX_SAFE_INTEGER, expiresAt: 0, priority: 0xffff_ffff });
    expect(toHex(bytes.subarray(bytes.length - 20))).toBe("001fffffffffffff" + "0000000000000000" + "ffffffff");
  });

  it("keeps field boundaries: moving bytes between adjacent fields changes the encoding", () => {
    const a = signedContent({ ...KNOWN_FIELDS, topic: "ab", device: "" });
    const b = signedContent({ ...KNOWN_FIELDS, topic: "a", device: "b" });
    expect(toHex(a)).not.toBe(toHex(b));
    expect(a.length).toBe(b.length);
  });

  it("refuses values it cannot encode", () => {
    expect(() => signedContent({ ...KNOWN_FIELDS, priority: -1 })).toThrow(RangeError);
    expect(() => signedContent({ ...KNOWN_FIELDS, priority: 2 ** 32 })).toThrow(RangeError);
    expect(() => signedContent({ ...KNOWN_FIELDS, createdAt: 1.5 })).toThrow(RangeError);
    expect(() => signedContent({ ...KNOWN_FIELDS, expiresAt: 2 ** 53 })).toThrow(RangeError);
    expect(() => signedContent({ ...KNOWN_FIELDS, topic: undefined as unknown as string })).toThrow(TypeError);
    expect(() => signedContent({ ...KNOWN_FIELDS, payload: "x" as unknown as Uint8Array })).toThrow(TypeError);
  });
});
