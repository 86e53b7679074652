// The part of the OCI runtime-spec (config.json, v1.0.2) that prebake reads and writes.

export interface User {
  uid: number;
  gid: number;
  umask?: number;
  additionalGids?: number[];
}

export interface Capabilities {
  bounding?: string[];
  effective?: string[];
  inheritable?: string[];
  permitted?: string[];
  ambient?: string[];
}

export interface Rlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface Process {
  terminal?: boolean;
  user: User;
  args?: string[];
  env?: string[];
  cwd: string;
  capabilities?: Capabilities;
  rlimits?: Rlimit[];
  noNewPrivileges?: boolean;
  apparmorProfile?: string;
  selinuxLabel?: string;
  oomScoreAdj?: number;
}

export interface Mount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface Namespace {
  type: string;
  path?: string;
}

export interface Linux {
  namespaces?: Namespace[];
  seccomp?: unknown;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  mountLabel?: string;
  /** Only what prebake reads of it is typed. */
  resources?: { memory?: { disableOOMKiller?: boolean; [key: string]: unknown }; [key: string]: unknown };
  cgroupsPath?: string;
  uidMappings?: unknown[];
  gidMappings?: unknown[];
  [key: string]: unknown;
}

export interface Spec {
  ociVersion: string;
  process?: Process;
  root?: { path: string; readonly?: boolean };
  hostname?: string;
  mounts?: Mount[];
  annotations?: Record<string, string> | null;
  linux?: Linux;
  [key: string]: unknown;
}
