// Validate an AsyncAPI document with the official parser (@asyncapi/parser), offline.
//   node deploy/tools/asyncapi-validate.mjs NODE_MODULES_DIR FILE
// NODE_MODULES_DIR holds @asyncapi/parser (deploy/tools/fetch-tools.sh installs it under
// ~/.cache/ragstream/tools/asyncapi). Prints one JSON line per diagnostic, then a summary line
// {"valid", "errors", "warnings", "diagnostics"}; exits 1 when the parser reports an error or no document.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const [, , modules, file] = process.argv;
if (!modules || !file) {
  console.error("usage: asyncapi-validate.mjs NODE_MODULES_DIR FILE");
  process.exit(2);
}
const require = createRequire(`${modules}/`);
const { Parser, DiagnosticSeverity } = require("@asyncapi/parser");

const { document, diagnostics } = await new Parser().parse(readFileSync(file, "utf8"), { source: file });
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path.join("/") }));
}
const count = (severity) => diagnostics.filter((d) => d.severity === severity).length;
const errors = count(DiagnosticSeverity.Error);
const valid = document !== undefined && errors === 0;
console.log(
  JSON.stringify({ valid, errors, warnings: count(DiagnosticSeverity.Warning), diagnostics: diagnostics.length }),
);
process.exit(valid ? 0 : 1);
