/** Types of serve-static.mjs (the tiny static server of the end-to-end tests and the UI benchmark). */
export interface StaticServer {
  url: string;
  port: number;
  /** URL path → HTTP status to answer with, or 'corrupt' (serve the file with its first bytes flipped) */
  faults: Map<string, number | 'corrupt'>;
  close(): Promise<void>;
}

export function serveStatic(root: string, options?: { port?: number; host?: string; quiet?: boolean }): Promise<StaticServer>;
