// CoilErrors lose their class crossing postMessage; send them as the engine's wire form and decode
// on the other side with `fromEngineError`, so the page gets the same typed error.

import { CoilError, fromEngineError } from "../core/errors.js";

export function encodeError(e: unknown): Error {
  const c: CoilError = fromEngineError(e);
  const wire = JSON.stringify({ code: c.code, offset: c.offset ?? null, message: c.message });
  return new Error(`coil-error:${wire}`);
}
