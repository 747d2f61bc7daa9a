// A progress bar on stderr with bytes and ETA; silent when stderr is not a terminal.

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

export class ProgressBar {
  private readonly t0 = Date.now();
  private readonly tty = process.stderr.isTTY === true;
  private shown = false;

  /** `unit` formats the done/total figures (default: megabytes). */
  constructor(
    private readonly label: string,
    private readonly unit: (n: number) => string = mb,
  ) {}

  update(done: number, total: number, detail = ""): void {
    if (!this.tty || total <= 0) return;
    const frac = Math.min(1, done / total);
    const width = 24;
    const filled = Math.round(frac * width);
    const elapsed = (Date.now() - this.t0) / 1000;
    const eta = frac > 0.01 ? Math.max(0, elapsed / frac - elapsed) : NaN;
    const etaText = Number.isFinite(eta) ? `ETA ${eta < 60 ? `${eta.toFixed(0)}s` : `${(eta / 60).toFixed(1)}m`}` : "";
    const cols = process.stderr.columns ?? 100;
    const line = `${this.label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${this.unit(done)}/${this.unit(total)} ${etaText} ${detail}`;
    process.stderr.write(`\r${line.slice(0, cols - 1).padEnd(cols - 1)}`);
    this.shown = true;
  }

  done(): void {
    if (this.shown) process.stderr.write("\n");
    this.shown = false;
  }
}
