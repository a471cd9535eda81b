/**
 * The decode worker's thread (./decoder.ts): decodes packed messages with decodeMessage, exactly as
 * the main thread would, and answers with the rows' COPY text, whether their keys are distinct, and
 * the rejections. It holds nothing but the row schemas it was sent.
 */

import { parentPort } from "node:worker_threads";
import { copyText, distinctKeys } from "../postgres/copy-text.ts";
import { defineRowSchema, type Row, type RowSchema } from "../record.ts";
import { decodeMessage } from "./dead-letter.ts";
import { type DecodeReply, type DecodeRequest, type IndexedRejection, unpack } from "./decoder.ts";

const schemas = new Map<number, RowSchema>();
const BACKSLASH = 0x5c;
const port = parentPort!;

port.on("message", (request: DecodeRequest) => {
  if (request.schema) {
    schemas.set(request.schemaId, defineRowSchema(request.schema.columns, request.schema.keyColumns));
  }
  const schema = schemas.get(request.schemaId)!;
  const messages = unpack(request.bytes, request.offsets);
  const rows: Row[] = [];
  const plain: boolean[] = [];
  const rejections: IndexedRejection[] = [];
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i]!;
    const decoded = decodeMessage(schema, message);
    if (decoded.ok) {
      rows.push(decoded.row);
      // Text without a backslash holds no escaped character, and JSON allows no raw control
      // character in a string: none of the row's values holds one COPY must escape.
      plain.push(!message.value!.includes(BACKSLASH));
    } else {
      rejections.push({ ...decoded, index: i });
    }
  }
  const text = copyText(rows, schema.columns, plain);
  // A buffer of its own, so that it moves to the main thread instead of being copied.
  const bytes = new ArrayBuffer(Buffer.byteLength(text));
  Buffer.from(bytes).write(text);
  const reply: DecodeReply = {
    id: request.id,
    rows: rows.length,
    rejections,
    text: bytes,
    distinctKeys: distinctKeys(rows, schema.keyColumns),
  };
  port.postMessage(reply, [bytes]);
});
