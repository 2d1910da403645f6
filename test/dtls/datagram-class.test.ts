import { describe, expect, it } from "vitest";
import { classifyStranger, isHelloVerifyRequest } from "../../src/dtls/datagram-class.ts";
import { Pipe } from "./harness.ts";

/** What a real client sends before its session exists: [first ClientHello, ClientHello with the cookie]. */
function clientHellos(): { first: Uint8Array; withCookie: Uint8Array; hvr: Uint8Array; later: Uint8Array[] } {
  const p = new Pipe();
  const toServer: Uint8Array[] = [];
  p.tamperToServer = (d) => {
    toServer.push(d.slice());
    return d;
  };
  p.startClient();
  expect(p.runUntilEstablished()).toBe(true);
  return { first: toServer[0] as Uint8Array, withCookie: toServer[1] as Uint8Array, hvr: p.sentByServer[0] as Uint8Array, later: toServer.slice(2) };
}

describe("datagram classes read from fixed offsets", () => {
  const { first, withCookie, hvr, later } = clientHellos();

  it("tells a first ClientHello from one with a cookie", () => {
    expect(classifyStranger(first)).toBe("hello");
    expect(classifyStranger(withCookie)).toBe("hello_with_cookie");
  });

  it("classes everything else as other: later flights, truncations, fragments, other epochs and versions", () => {
    for (const d of later) expect(classifyStranger(d)).toBe("other");
    for (let n = 0; n < first.length; n++) expect(classifyStranger(first.subarray(0, n))).toBe("other");
    const fragment = first.slice();
    fragment[24] = (fragment[24] as number) - 1; // fragment_length < length
    expect(classifyStranger(fragment)).toBe("other");
    const epoch1 = first.slice();
    epoch1[4] = 1;
    expect(classifyStranger(epoch1)).toBe("other");
    const tls = first.slice();
    tls[1] = 3; // a TLS record version
    expect(classifyStranger(tls)).toBe("other");
    const longSessionId = first.slice();
    longSessionId[59] = 255; // the session id would run past the message
    expect(classifyStranger(longSessionId)).toBe("other");
    expect(classifyStranger(new Uint8Array(200))).toBe("other");
  });

  it("recognizes a HelloVerifyRequest and nothing else as one", () => {
    expect(isHelloVerifyRequest(hvr)).toBe(true);
    expect(isHelloVerifyRequest(first)).toBe(false);
    expect(isHelloVerifyRequest(hvr.subarray(0, 13))).toBe(false);
  });
});
