import { describe, expect, it } from "vitest";
import {
  expectPositionals,
  formatHostPort,
  parseCertKeyPairs,
  parseCommandLine,
  parseFingerprint,
  parseHostPort,
  parseInteger,
  parsePsk,
  parsePskList,
  parseServerName,
  quote,
  wantsHelp,
} from "../../src/cli/args.ts";
import type { OptionSpecs } from "../../src/cli/args.ts";
import { UsageError } from "../../src/cli/errors.ts";

function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    const message = (e as Error).message;
    expect(message).not.toContain("\n");
    return message;
  }
  throw new Error("expected a UsageError");
}

describe("parseHostPort", () => {
  it.each([
    ["127.0.0.1:5684", "127.0.0.1", 5684],
    ["localhost:1", "localhost", 1],
    ["dtls.example.com:65535", "dtls.example.com", 65535],
    ["[::1]:5684", "::1", 5684],
    ["[2001:db8::1]:443", "2001:db8::1", 443],
    ["[fe80::1%eth0]:5684", "fe80::1%eth0", 5684],
    ["0.0.0.0:5684", "0.0.0.0", 5684],
  ])("accepts %s", (text, host, port) => {
    expect(parseHostPort(text, "--listen")).toEqual({ host, port });
  });

  it("accepts port 0 only when allowed", () => {
    expect(parseHostPort("127.0.0.1:0", "--listen", { allowPortZero: true })).toEqual({ host: "127.0.0.1", port: 0 });
    expect(parseHostPort("[::1]:0", "--listen", { allowPortZero: true })).toEqual({ host: "::1", port: 0 });
    expect(usageMessage(() => parseHostPort("127.0.0.1:0", "HOST:PORT"))).toBe("HOST:PORT: port 0 is out of range (1-65535)");
  });

  it.each([
    ["127.0.0.1", "--listen: expected HOST:PORT, got '127.0.0.1'"],
    ["", "--listen: expected HOST:PORT, got ''"],
    [":5684", "--listen: missing host in ':5684' (e.g. 127.0.0.1:5684)"],
    ["127.0.0.1:", "--listen: missing port in '127.0.0.1:'"],
    ["127.0.0.1:http", "--listen: port 'http' is not a number"],
    ["127.0.0.1:-1", "--listen: port '-1' is not a number"],
    ["127.0.0.1:65536", "--listen: port 65536 is out of range (1-65535)"],
    ["::1:5684", "--listen: put IPv6 addresses in brackets, e.g. [::1]:5684 (got '::1:5684')"],
    ["[::1:5684", "--listen: missing ']' in '[::1:5684' (expected [IPv6]:PORT, e.g. [::1]:5684)"],
    ["[::1]5684", "--listen: expected ':PORT' after ']' in '[::1]5684'"],
    ["[127.0.0.1]:5684", "--listen: '127.0.0.1' is not an IPv6 address"],
    ["[::1]:", "--listen: missing port in '[::1]:'"],
    ["999.1.1.1:5684", "--listen: '999.1.1.1' is not a valid host name or IP address"],
    ["bad host:5684", "--listen: 'bad host' is not a valid host name or IP address"],
  ])("rejects %j", (text, message) => {
    expect(usageMessage(() => parseHostPort(text, "--listen"))).toBe(message);
  });
});

describe("formatHostPort", () => {
  it("brackets IPv6 only", () => {
    expect(formatHostPort("127.0.0.1", 5684)).toBe("127.0.0.1:5684");
    expect(formatHostPort("::1", 5684)).toBe("[::1]:5684");
  });
});

describe("parsePsk", () => {
  it("parses ID:HEXKEY", () => {
    const psk = parsePsk("device-1:00ff10AB");
    expect(psk.identity).toBe("device-1");
    expect(Buffer.from(psk.key).toString("hex")).toBe("00ff10ab");
  });

  it("takes the key after the last colon, so identities may contain colons", () => {
    const psk = parsePsk("urn:dev:1:0102");
    expect(psk.identity).toBe("urn:dev:1");
    expect([...psk.key]).toEqual([1, 2]);
  });

  it.each([
    ["device-1", "--psk: expected ID:HEXKEY (e.g. device-1:000102030405060708090a0b0c0d0e0f)"],
    [":0102", "--psk: the identity before ':' is empty"],
    ["dev1:", "--psk dev1: the key after ':' is empty"],
    ["dev1:0g", "--psk dev1: the key must be hexadecimal digits (0-9, a-f)"],
    ["dev1:0x01", "--psk dev1: the key must be hexadecimal digits (0-9, a-f)"],
    ["dev1:012", "--psk dev1: the key must have an even number of hex digits (got 3)"],
    ["my dev:xy", '--psk "my dev": the key must be hexadecimal digits (0-9, a-f)'],
  ])("rejects %j", (text, message) => {
    expect(usageMessage(() => parsePsk(text))).toBe(message);
  });

  it("accepts identities with spaces", () => {
    expect(parsePsk("my dev:01").identity).toBe("my dev");
  });

  it("never repeats the key in an error", () => {
    const message = usageMessage(() => parsePsk("dev1:deadbeefz"));
    expect(message).not.toContain("deadbeef");
  });

  it("uses the given label", () => {
    expect(usageMessage(() => parsePsk("x", "PSK"))).toMatch(/^PSK: /);
  });

  it("rejects an identity given twice in a list", () => {
    expect(parsePskList(["a:01", "b:02"]).map((p) => p.identity)).toEqual(["a", "b"]);
    expect(usageMessage(() => parsePskList(["a:01", "a:02"]))).toBe("--psk: identity a is given twice");
  });
});

describe("parseInteger", () => {
  const range = { min: 100, max: 65507 };
  it("accepts whole numbers in range", () => {
    expect(parseInteger("1200", "--mtu", range)).toBe(1200);
    expect(parseInteger("100", "--mtu", range)).toBe(100);
    expect(parseInteger("65507", "--mtu", range)).toBe(65507);
  });
  it.each([
    ["", "--mtu: '' is not a whole number"],
    ["12.5", "--mtu: '12.5' is not a whole number"],
    ["1e3", "--mtu: '1e3' is not a whole number"],
    ["-5", "--mtu: '-5' is not a whole number"],
    ["+5", "--mtu: '+5' is not a whole number"],
    ["99", "--mtu: 99 is out of range (100-65507)"],
    ["65508", "--mtu: 65508 is out of range (100-65507)"],
    ["99999999999999999999", "--mtu: 99999999999999999999 is out of range (100-65507)"],
  ])("rejects %j", (text, message) => {
    expect(usageMessage(() => parseInteger(text, "--mtu", range))).toBe(message);
  });
});

describe("parseCommandLine", () => {
  const specs: OptionSpecs = {
    listen: { type: "string", description: "" },
    psk: { type: "string", multiple: true, short: "p", description: "" },
    echo: { type: "boolean", description: "" },
  };
  const cmd = "dtlspush x";

  it("parses values and positionals", () => {
    const parsed = parseCommandLine(["--listen", "a:1", "-p", "x:01", "--psk=y:02", "--echo", "pos"], specs, cmd);
    expect(parsed.values).toEqual({ listen: "a:1", psk: ["x:01", "y:02"], echo: true });
    expect(parsed.positionals).toEqual(["pos"]);
  });

  it.each([
    [["--bogus"], "unknown option '--bogus' (see 'dtlspush x --help')"],
    [["-z"], "unknown option '-z' (see 'dtlspush x --help')"],
    [["--listen"], "option '--listen' needs a value (see 'dtlspush x --help')"],
    [["-p"], "option '--psk' needs a value (see 'dtlspush x --help')"],
    [["--echo=yes"], "option '--echo' does not take a value (see 'dtlspush x --help')"],
    [["--listen", "--echo"], "option '--listen' needs a value (to give a value starting with '-', write --listen=VALUE) (see 'dtlspush x --help')"],
  ])("rejects %j", (argv, message) => {
    expect(usageMessage(() => parseCommandLine(argv, specs, cmd))).toBe(message);
  });
});

describe("expectPositionals", () => {
  it("checks the count", () => {
    expect(expectPositionals(["a"], ["HOST:PORT"], "c")).toEqual(["a"]);
    expect(usageMessage(() => expectPositionals([], ["HOST:PORT"], "c"))).toBe("missing HOST:PORT (see 'c --help')");
    expect(usageMessage(() => expectPositionals(["a", "b"], ["HOST:PORT"], "c"))).toBe("unexpected argument 'b' (see 'c --help')");
  });
});

describe("wantsHelp / quote", () => {
  it("finds -h/--help before --", () => {
    expect(wantsHelp(["--listen", "x", "-h"])).toBe(true);
    expect(wantsHelp(["--help"])).toBe(true);
    expect(wantsHelp(["--", "--help"])).toBe(false);
    expect(wantsHelp(["--helpful"])).toBe(false);
  });
  it("quotes only when needed", () => {
    expect(quote("dev1")).toBe("dev1");
    expect(quote("my dev")).toBe('"my dev"');
    expect(quote("a=b")).toBe('"a=b"');
    expect(quote("")).toBe('""');
  });
});

describe("parseCertKeyPairs", () => {
  it("pairs by position", () => {
    expect(parseCertKeyPairs([], [])).toEqual([]);
    expect(parseCertKeyPairs(["a.pem", "b.pem"], ["a.key", "b.key"])).toEqual([
      { cert: "a.pem", key: "a.key" },
      { cert: "b.pem", key: "b.key" },
    ]);
  });
  it.each([
    [["a.pem"], [], "--cert a.pem has no --key (give --cert FILE --key FILE in pairs)"],
    [["a.pem", "b c.pem"], ["a.key"], '--cert "b c.pem" has no --key (give --cert FILE --key FILE in pairs)'],
    [[], ["a.key"], "--key a.key has no --cert (give --cert FILE --key FILE in pairs)"],
    [[""], ["a.key"], "--cert: the file name is empty"],
    [["a.pem"], [""], "--key: the file name is empty"],
  ])("rejects %j / %j", (certs, keys, message) => {
    expect(usageMessage(() => parseCertKeyPairs(certs, keys))).toBe(message);
  });
});

describe("parseFingerprint", () => {
  const hex = "0123456789abcdef".repeat(4);
  it("accepts hex with or without colons, any case", () => {
    expect(parseFingerprint(hex)).toBe(hex);
    expect(parseFingerprint(hex.toUpperCase())).toBe(hex);
    expect(parseFingerprint(hex.toUpperCase().match(/../g)?.join(":") ?? "")).toBe(hex);
    expect(parseFingerprint(` ${hex} `)).toBe(hex);
  });
  it.each([
    ["", "--fingerprint: the fingerprint is empty"],
    [":", "--fingerprint: the fingerprint is empty"],
    [`${hex.slice(2)}zz`, "--fingerprint: expected hexadecimal digits (0-9, a-f) and colons"],
    [hex.slice(2), "--fingerprint: a SHA-256 fingerprint has 64 hex digits, got 62"],
    [`${hex}00`, "--fingerprint: a SHA-256 fingerprint has 64 hex digits, got 66"],
  ])("rejects %j", (text, message) => {
    expect(usageMessage(() => parseFingerprint(text))).toBe(message);
  });
});

describe("parseServerName", () => {
  it.each(["localhost", "dtls.example.com", "127.0.0.1", "::1", "2001:db8::1"])("accepts %s", (name) => {
    expect(parseServerName(name)).toBe(name);
  });
  it.each([
    ["", "--servername: the name is empty"],
    ["a b", "--servername: 'a b' is not a valid host name or IP address"],
    ["999.1.1.1", "--servername: '999.1.1.1' is not a valid host name or IP address"],
    ["[::1]", "--servername: '[::1]' is not a valid host name or IP address"],
  ])("rejects %j", (text, message) => {
    expect(usageMessage(() => parseServerName(text))).toBe(message);
  });
});
