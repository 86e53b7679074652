// node: a page renderer on Node.js with a sizeable dependency tree (Debian's node-* packages).
//
// Initialisation requires markdown-it, highlight.js (every language it ships), sanitize-html (with
// htmlparser2 and postcss), js-yaml, ajv, nunjucks and lodash, some 400 modules read, compiled and
// run, then compiles the front matter's JSON schema and the page template and renders a sample page
// once: the work a cold start pays and a restore does not.
//
// POST /render with a Markdown document, optionally opened by YAML front matter between "---"
// lines ({title, tags, draft}), answers text/html: the page, its code blocks highlighted, the
// Markdown's HTML sanitised. A body that is not UTF-8, front matter that is not YAML or does not
// fit the schema answer 400. Any other request answers the JSON status of serve.js.
'use strict';

const path = require('node:path');
// serve.js sits beside this file, in the image (/app) as in the repository (images/node).
const { BadRequest, serve } = require(path.join(__dirname, 'serve.js'));

const MarkdownIt = require('markdown-it');
const hljs = require('highlight.js');
const sanitizeHtml = require('sanitize-html');
const yaml = require('js-yaml');
const Ajv = require('ajv');
const nunjucks = require('nunjucks');
const _ = require('lodash');

// Debian's highlight.js 9 would print a notice that upstream no longer supports version 9 on first use.
hljs.configure({ hideUpgradeWarningAcceptNoSupportOrSecurityUpdates: true });

const markdown = new MarkdownIt({
  html: true,
  linkify: true,
  typographer: true,
  highlight: (code, lang) => (lang && hljs.getLanguage(lang) ? hljs.highlight(lang, code, true).value : ''),
});

const validateFrontMatter = new Ajv({ allErrors: true }).compile({
  type: 'object',
  properties: {
    title: { type: 'string', minLength: 1, maxLength: 200 },
    tags: { type: 'array', items: { type: 'string', maxLength: 50 }, maxItems: 20 },
    draft: { type: 'boolean' },
  },
  additionalProperties: false,
});

const SANITIZE = {
  allowedTags: sanitizeHtml.defaults.allowedTags.concat(['h1', 'h2', 'img', 'span']),
  allowedAttributes: { ...sanitizeHtml.defaults.allowedAttributes, span: ['class'], code: ['class'] },
};

const env = new nunjucks.Environment(null, { autoescape: true });
const page = nunjucks.compile(
  `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }}</title></head>
<body>
{% if draft %}<p class="draft">draft</p>
{% endif %}{% if tags.length %}<ul class="tags">{% for tag in tags %}<li>{{ tag }}</li>{% endfor %}</ul>
{% endif %}<main>
{{ content | safe }}
</main>
</body>
</html>
`,
  env,
);

const FRONT_MATTER = /^---\r?\n([\s\S]*?)\r?\n---(?:\r?\n|$)/;
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The page for a document: front matter checked, Markdown rendered, highlighted and sanitised. */
function render(text) {
  let meta = {};
  let body = text;
  const m = FRONT_MATTER.exec(text);
  if (m) {
    try {
      meta = yaml.load(m[1]) ?? {};
    } catch (e) {
      throw new BadRequest(`the front matter is not YAML: ${e.reason || e.message}`);
    }
    if (!validateFrontMatter(meta)) throw new BadRequest(`the front matter does not fit: ${validateFrontMatter.errors.map((e) => `${e.dataPath || '/'} ${e.message}`).join('; ')}`);
    body = text.slice(m[0].length);
  }
  const content = sanitizeHtml(markdown.render(body), SANITIZE);
  const heading = /<h1>(.*?)<\/h1>/.exec(content);
  const title = meta.title ?? (heading ? _.unescape(heading[1].replace(/<[^>]*>/g, '')) : 'Untitled');
  return page.render({ title, tags: _.uniq(meta.tags ?? []), draft: meta.draft === true, content });
}

const SAMPLE = '---\ntitle: Sample\ntags: [a, b]\n---\n# Sample\n\n```js\nconst x = 1;\n```\n';
const SAMPLE_BYTES = render(SAMPLE).length;

function handle(request) {
  if (request.path !== '/render') return null;
  if (request.method !== 'POST') throw new BadRequest('POST a Markdown document to /render');
  let text;
  try {
    text = decoder.decode(request.body);
  } catch {
    throw new BadRequest('the body is not UTF-8');
  }
  return { status: 200, contentType: 'text/html; charset=utf-8', body: Buffer.from(render(text)) };
}

serve('node', handle, {
  node_version: process.version,
  modules: Object.keys(require.cache).length,
  sample_bytes: SAMPLE_BYTES,
});
