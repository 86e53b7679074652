// Finds secret-looking values in what a bake would freeze into the image: the process's
// environment and arguments. Process memory travels inside the checkpoint layer; so would they.

const SECRET_NAME = /(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|PASS|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIALS?|AUTH)(_|$)/i;
const SECRET_VALUE: [RegExp, string][] = [
  [/AKIA[0-9A-Z]{16}/, 'an AWS access key id'],
  [/gh[pousr]_[A-Za-z0-9]{30,}/, 'a GitHub token'],
  [/xox[abprs]-[A-Za-z0-9-]{10,}/, 'a Slack token'],
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'a private key'],
  [/eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\./, 'a JSON web token'],
];
const SECRET_FLAG = /^--?[\w-]*(password|passwd|token|secret|api-?key)[\w-]*=./i;

/** One line per finding, naming where (never quoting the value). */
export function findSecrets(env: readonly string[], args: readonly string[]): string[] {
  const found: string[] = [];
  for (const e of env) {
    const eq = e.indexOf('=');
    const [name, value] = [e.slice(0, eq), e.slice(eq + 1)];
    if (!value) continue;
    const kind = SECRET_VALUE.find(([re]) => re.test(value))?.[1];
    if (kind) found.push(`env ${name} holds ${kind}`);
    else if (SECRET_NAME.test(name)) found.push(`env ${name} looks like a secret`);
  }
  args.forEach((a, i) => {
    const kind = SECRET_VALUE.find(([re]) => re.test(a))?.[1];
    if (kind) found.push(`argument ${i} holds ${kind}`);
    else if (SECRET_FLAG.test(a)) found.push(`argument ${i} (${a.slice(0, a.indexOf('='))}=…) looks like a secret`);
  });
  return found;
}
