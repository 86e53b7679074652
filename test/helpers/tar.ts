// Tars made member by member with tar-stream, hostile ones included, for the layer tests.

import tar from 'tar-stream';

export interface Member extends Partial<tar.Header> {
  name: string;
  content?: string | Buffer;
}

/** The tar of `members` (regular files 0644 with mtime 0 unless a member says otherwise). */
export async function tarOf(members: Member[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collecting = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const { content, ...header } of members)
    await new Promise<void>((resolve, reject) => pack.entry({ type: 'file', mode: 0o644, mtime: new Date(0), ...header }, content ?? '', (e) => (e ? reject(e) : resolve())));
  pack.finalize();
  await collecting;
  return Buffer.concat(chunks);
}
