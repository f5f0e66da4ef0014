/**
 * A model folder as the browser hands it over: the files of `<input webkitdirectory>` (each with
 * its webkitRelativePath, `folder/manifest.json`) or of a dropped directory (DataTransferItem
 * webkitGetAsEntry, walked here). Paths come out relative to the folder: its own name is stripped,
 * so `kvscope-draft-2l/model.onnx` is `model.onnx`, as the manifest lists it.
 */

export interface FolderFile {
  /** relative to the folder */
  path: string;
  file: File;
}

export interface PickedFolder {
  /** the folder's name ('' when the files came without one) */
  name: string;
  files: FolderFile[];
}

/**
 * Splits `top/rest` into the folder name and the path inside it; a bare name has no folder. Nothing
 * else is rewritten (a leading "/" stays): the check (source.ts folderSource) looks files up only by
 * the plain paths the manifest lists, so a path that is not plain is never read or stored.
 */
function splitTop(relative: string): { top: string; path: string } {
  const at = relative.indexOf('/');
  return at <= 0 ? { top: '', path: relative } : { top: relative.slice(0, at), path: relative.slice(at + 1) };
}

/**
 * The files of a file input (webkitdirectory: relative paths under one folder; without it, plain
 * files picked together, taken as the folder's contents).
 */
export function folderFromFiles(list: Iterable<File>): PickedFolder {
  const picked = [...list].map((file) => {
    const relative = (file as File & { webkitRelativePath?: string }).webkitRelativePath || file.name;
    return { file, relative, ...splitTop(relative) };
  });
  const tops = new Set(picked.map((p) => p.top));
  // files of more than one folder keep their folder names: the manifest's paths then do not match,
  // and the check names the first file it cannot find
  if (tops.size > 1) return { name: '', files: picked.map((p) => ({ path: p.relative, file: p.file })) };
  return { name: [...tops][0] ?? '', files: picked.map((p) => ({ path: p.path, file: p.file })) };
}

/** The part of FileSystemEntry used here (so tests can hand in fakes). */
export interface EntryLike {
  name: string;
  isFile: boolean;
  isDirectory: boolean;
  file?(success: (file: File) => void, failure?: (error: unknown) => void): void;
  createReader?(): { readEntries(success: (entries: EntryLike[]) => void, failure?: (error: unknown) => void): void };
}

async function entriesOf(dir: EntryLike): Promise<EntryLike[]> {
  const reader = dir.createReader!();
  const all: EntryLike[] = [];
  // readEntries answers in batches (Chromium: 100 at a time) until it answers none
  for (;;) {
    const batch = await new Promise<EntryLike[]>((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) return all;
    all.push(...batch);
  }
}

async function walk(entry: EntryLike, prefix: string, out: FolderFile[]): Promise<void> {
  if (entry.isFile && entry.file) {
    const file = await new Promise<File>((resolve, reject) => entry.file!(resolve, reject));
    out.push({ path: `${prefix}${entry.name}`, file });
  } else if (entry.isDirectory && entry.createReader) {
    for (const child of await entriesOf(entry)) await walk(child, `${prefix}${entry.name}/`, out);
  }
}

/**
 * What was dropped: one directory gives its files relative to it; loose files are taken as the
 * folder's contents. null when nothing usable was dropped.
 */
export async function folderFromEntries(entries: readonly EntryLike[]): Promise<PickedFolder | null> {
  if (entries.length === 0) return null;
  if (entries.length === 1 && entries[0].isDirectory) {
    const files: FolderFile[] = [];
    for (const child of await entriesOf(entries[0])) await walk(child, '', files);
    return { name: entries[0].name, files };
  }
  const files: FolderFile[] = [];
  for (const entry of entries) await walk(entry, '', files);
  return { name: '', files };
}

/** The entries of a drop (DataTransferItem.webkitGetAsEntry), or the plain files where entries are not offered. */
export async function folderFromDrop(data: DataTransfer): Promise<PickedFolder | null> {
  const items = [...data.items].filter((item) => item.kind === 'file');
  const entries = items.map((item) => item.webkitGetAsEntry?.() ?? null);
  if (entries.length > 0 && entries.every((e) => e !== null)) return folderFromEntries(entries as unknown as EntryLike[]);
  return data.files.length > 0 ? folderFromFiles(data.files) : null;
}
