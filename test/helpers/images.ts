// Function images for prebake-build tests: the noop function as an OCI layout (a Python layer,
// an app layer with /app/function.py), built once and cached by functionImage (lab/functions.ts).

import { FUNCTION_PORT, FUNCTIONS, functionImage } from '../../lab/functions.ts';

export const NOOP_PORT = FUNCTION_PORT;
export const NOOP_CMD = [...FUNCTIONS.noop.cmd];

/**
 * An OCI layout holding `latest`: the noop function (images/noop) on the Python rootfs, Cmd
 * python3 /app/function.py, port 8080 exposed. Shared by every test: never write into it.
 */
export function noopImage(): Promise<string> {
  return functionImage('noop');
}
