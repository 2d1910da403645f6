/** The daemon's configuration: file + environment + flags, credentials, data directory. */
export { ConfigError } from "./errors.ts";
export { RedisUrl, redactRedisUrl, REDACTED_PASSWORD } from "./redis-url.ts";
export {
  CLIENT_AUTH_MODES,
  configSchema,
  LOG_LEVELS,
  NODE_ID_PATTERN,
  MAX_WORKERS,
  parseHostPort,
  QUEUE_FULL_POLICIES,
  SECTIONS,
  SETTINGS,
  type ConfigFile,
  type LogLevel,
  type SettingInfo,
  type SettingKind,
} from "./schema.ts";
export {
  ENV_NOT_SETTINGS,
  FLAG_SETTINGS,
  loadConfig,
  maxRecordPayload,
  settingLabel,
  storeBackend,
  storeDescription,
  toDeliveryOptions,
  signingWorkers,
  clusterWorkers,
  toStoreOptions,
  type ConfigFlags,
  type DaemonConfig,
  type HostPort,
  type LoadConfigOptions,
} from "./load.ts";
export { DEV_SERVER_CERT, loadCredentials, toDtlsOptions, type DtlsCredentials } from "./credentials.ts";
export { openDataDir, nodeIdFor, DATA_DIR_MODE, NODE_ID_FILE, type DataDir } from "../data-dir.ts";
