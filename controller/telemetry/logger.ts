import pino from "pino";

/**
 * The process logger: JSON lines on stdout. Connection URLs and passwords are redacted wherever they
 * appear under these keys, as a second line of defence: code never logs a Secret's value on purpose.
 */
export const logger = pino({
  name: "syncgov",
  level: process.env.SYNCGOV_LOG_LEVEL ?? "info",
  redact: {
    paths: [
      "password",
      "*.password",
      "connectionString",
      "*.connectionString",
      "url",
      "*.url",
      "secret",
      "*.secret",
    ],
    censor: "[redacted]",
  },
});

export type Logger = pino.Logger;
