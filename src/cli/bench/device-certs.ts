/**
 * `--cert`, in a worker: a key and a certificate for each of its devices
 * (CN = device id, SAN URI urn:dtlspush:device:<id>), signed by the CA the
 * bench passed over IPC. Every worker issues its own devices' certificates,
 * in parallel with the other workers; nothing is written to disk or kept
 * after the run.
 */
import type { DeviceCredential } from "./devices.ts";
import type { WorkerCertInit } from "./ipc.ts";

/** Certificates issued at a time in one worker: key generation and signing are WebCrypto jobs on the thread pool. */
export const ISSUE_CONCURRENCY = 4;

export interface IssueProgress {
  /** certificates issued so far */
  readonly issued: number;
  /** wall time since issuing began (the CA loaded), ms */
  readonly issueMs: number;
}

/** One certificate credential per id, in the order of `ids`; `progress` after each certificate. */
export async function issueCertificateCredentials(
  init: WorkerCertInit,
  ids: readonly string[],
  progress: (p: IssueProgress) => void,
): Promise<{ credentials: DeviceCredential[]; issueMs: number }> {
  // loaded here, not at the worker's start: PSK runs do without it
  const { issueDeviceCertificate, loadCertificateAuthority } = await import("../../pki/index.ts");
  const ca = await loadCertificateAuthority(init.caCertPem, init.caKeyPem);
  const t0 = performance.now();
  const credentials: DeviceCredential[] = new Array<DeviceCredential>(ids.length);
  let next = 0;
  let issued = 0;
  const lane = async (): Promise<void> => {
    while (next < ids.length) {
      const k = next++;
      const made = await issueDeviceCertificate(ca, { id: ids[k] as string, curve: init.curve });
      // the leaf alone: the server has the CA it leads to, so the chain need not carry it
      credentials[k] = { kind: "certificate", cert: made.certPem, key: made.keyPem, ca: init.trustPem };
      issued++;
      progress({ issued, issueMs: performance.now() - t0 });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(init.concurrency, ids.length)) }, lane));
  return { credentials, issueMs: performance.now() - t0 };
}
