/** Where a command writes (tests pass their own), and progress lines on stderr. */

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** whether stderr is a terminal (progress lines overwrite each other) */
  stderrIsTTY?: boolean;
}

/** The process's own streams. */
export function processIO(): CliIO {
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    stderrIsTTY: Boolean(process.stderr.isTTY),
  };
}

/** Progress lines on stderr: overwritten in place on a terminal, one per line otherwise; null ends. */
export function makeProgress(io: CliIO): (message: string | null) => void {
  let open = false;
  return (message) => {
    if (message === null) {
      if (open && io.stderrIsTTY) io.stderr('\r\x1b[2K');
      open = false;
      return;
    }
    if (io.stderrIsTTY) {
      io.stderr(`\r\x1b[2K${message.slice(0, 150)}`);
      open = true;
    } else {
      io.stderr(`${message}\n`);
    }
  };
}
