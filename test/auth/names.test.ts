import { describe, expect, it } from "vitest";
import { AuthError } from "../../src/auth/errors.ts";
import { checkDeviceId, checkTopic, DEVICE_ID_PATTERN, TOPIC_PATTERN } from "../../src/auth/names.ts";

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(AuthError);
    return (e as AuthError).code;
  }
  return undefined;
}

describe("device ids", () => {
  it("accepts ids of the pattern and returns them", () => {
    for (const id of ["a", "dev-1", "sensor.kitchen_2", "urn:dev:42", "me@home", "0", "A".repeat(128)]) {
      expect(checkDeviceId(id)).toBe(id);
      expect(DEVICE_ID_PATTERN.test(id)).toBe(true);
    }
  });

  it("refuses bad ids with bad_device and says what is wrong", () => {
    const cases: [string, RegExp][] = [
      ["", /is empty/],
      ["A".repeat(129), /129 characters long/],
      ["-dev", /must start with a letter or digit/],
      [".dev", /must start with a letter or digit/],
      ["dev 1", /contains " "/],
      ["dev/1", /contains "\/"/],
      ["dév", /contains "é"/],
    ];
    for (const [id, message] of cases) {
      expect(
        codeOf(() => checkDeviceId(id)),
        id,
      ).toBe("bad_device");
      expect(() => checkDeviceId(id)).toThrow(message);
    }
    expect(codeOf(() => checkDeviceId(undefined as unknown as string))).toBe("bad_device");
  });
});

describe("topics", () => {
  it("accepts topics of the pattern", () => {
    for (const t of ["alerts", "site/1/temp", "a.b-c_d", "0/x", "a".repeat(128)]) {
      expect(checkTopic(t)).toBe(t);
      expect(TOPIC_PATTERN.test(t)).toBe(true);
    }
  });

  it("refuses bad topics with bad_topic", () => {
    const cases: [string, RegExp][] = [
      ["", /is empty/],
      ["a".repeat(129), /129 characters long/],
      ["/a", /must start with a letter or digit/],
      ["a//b", /empty segment/],
      ["a/", /ends with "\/"/],
      ["a/b/", /ends with "\/"/],
      ["a+b", /contains "\+"/],
      ["a/#", /contains "#"/],
      ["a b", /contains " "/],
      ["a:b", /contains ":"/],
    ];
    for (const [t, message] of cases) {
      expect(
        codeOf(() => checkTopic(t)),
        t,
      ).toBe("bad_topic");
      expect(() => checkTopic(t)).toThrow(message);
    }
  });
});
