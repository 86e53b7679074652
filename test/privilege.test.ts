// End to end: what a restored process holds (/proc/<pid>/status: CapEff, CapBnd, CapPrm,
// NoNewPrivs, Seccomp, Uid) is never more than the container's spec asks for; its oom_score_adj
// is the spec's, whatever was baked.

import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spec } from '../oci/runtime-spec.ts';
import { capList } from '../src/runtime/inspect.ts';
import { bakeNoop, type BakedFunction } from '../lab/baked.ts';
import { PREBAKE } from '../lab/bundle.ts';
import { run, testReplica } from './helpers/bundle.ts';

const DOCKER_CAPS = ['CHOWN', 'DAC_OVERRIDE', 'FSETID', 'FOWNER', 'MKNOD', 'NET_RAW', 'SETGID', 'SETUID', 'SETFCAP', 'SETPCAP', 'NET_BIND_SERVICE', 'SYS_CHROOT', 'KILL', 'AUDIT_WRITE'].map((c) => `CAP_${c}`);

const capsOf = (hex: string): string[] => capList(BigInt(`0x${hex}`));

let baked: BakedFunction;
test.before(async () => {
  baked = await bakeNoop();
});
test.after.always(() => baked?.cleanup());

async function restoredStatus(t: import('ava').ExecutionContext, change: (s: Spec) => void) {
  const { b, rt, id } = testReplica(t, baked.layers, 'priv');
  const spec = baked.spec(b.netnsPath, change);
  b.writeSpec(spec);
  const pidFile = join(b.dir, 'pid');
  const c = await run(PREBAKE, ['--root', rt.root, '--log', rt.log, '--log-format', 'json', 'create', '--bundle', b.dir, '--pid-file', pidFile, id]);
  t.is(c.code, 0, c.output);
  const restored = rt.logLines().some((l) => /^restored /.test(l.msg));
  const status = readFileSync(`/proc/${readFileSync(pidFile, 'utf8').trim()}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)![1]!.trim();
  const oomScoreAdj = Number(readFileSync(`/proc/${readFileSync(pidFile, 'utf8').trim()}/oom_score_adj`, 'utf8'));
  const warnings = rt.logLines().filter((l) => l.level === 'warning').map((l) => l.msg);
  return { spec, restored, warnings, oomScoreAdj, capEff: capsOf(field('CapEff')), capBnd: capsOf(field('CapBnd')), capPrm: capsOf(field('CapPrm')), noNewPrivs: field('NoNewPrivs'), seccomp: field('Seccomp'), uid: field('Uid').split(/\s+/) };
}

test('restored into a spec granting more capabilities, the process keeps the fewer it was baked with', async (t) => {
  const s = await restoredStatus(t, (spec) => {
    for (const set of ['bounding', 'effective', 'permitted'] as const) spec.process!.capabilities![set] = DOCKER_CAPS;
    // Ambient stays as baked (runc's default keeps these three ambient).
    spec.process!.noNewPrivileges = false;
  });
  t.true(s.restored);
  const asked = s.spec.process!.capabilities!;
  for (const c of s.capEff) t.true(asked.effective!.includes(c), `CapEff ${c} asked for`);
  for (const c of s.capBnd) t.true(asked.bounding!.includes(c), `CapBnd ${c} asked for`);
  for (const c of s.capPrm) t.true(asked.permitted!.includes(c), `CapPrm ${c} asked for`);
  t.deepEqual(s.capEff.sort(), ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'], 'the baked set, not the wider one asked for');
  t.is(s.noNewPrivs, '1', 'baked with noNewPrivileges, still set: stricter than asked');
  t.deepEqual(s.uid, ['0', '0', '0', '0']);
});

test('a spec asking for fewer capabilities than were baked gets a cold process with exactly what it asks', async (t) => {
  const s = await restoredStatus(t, (spec) => {
    for (const set of ['bounding', 'effective', 'permitted', 'ambient', 'inheritable'] as const) spec.process!.capabilities![set] = ['CAP_KILL'];
  });
  t.false(s.restored);
  t.deepEqual(s.capEff, ['CAP_KILL']);
  t.deepEqual(s.capBnd, ['CAP_KILL']);
});

test('a restored process gets the oom_score_adj its spec asks for, not the baked one (kubelet sets it per pod and node)', async (t) => {
  // Above this host's own: lowering it needs CAP_SYS_RESOURCE, which root may lack in a sandbox (runc create fails then too).
  for (const want of [321, 654]) {
    const s = await restoredStatus(t, (spec) => {
      spec.process!.oomScoreAdj = want;
    });
    t.true(s.restored, `restored under oomScoreAdj ${want}`);
    t.is(s.oomScoreAdj, want);
  }
});

test('a spec granting CAP_SYS_ADMIN without a user namespace starts cold: it could remount the host tmpfs restored containers share', async (t) => {
  const s = await restoredStatus(t, (spec) => {
    for (const set of ['bounding', 'permitted'] as const) spec.process!.capabilities![set] = [...DOCKER_CAPS, 'CAP_SYS_ADMIN'];
  });
  t.false(s.restored);
  t.regex(s.warnings.join('\n'), /^cold start: the spec grants CAP_SYS_ADMIN/m);
  t.true(s.capBnd.includes('CAP_SYS_ADMIN'), 'the cold process has what its spec asks');
});
