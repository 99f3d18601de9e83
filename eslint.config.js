// ESLint for the reader portal's browser code (reader_portal/static): `make lint-js`.
// The files are classic scripts loaded in order by the templates, sharing their top-level
// names: portal.js first (every page), admin.js before an admin page's own file, and the
// study page's viewer.js, report.js, study.js. Each list below is what a file takes from
// the ones loaded before (or beside) it, so a name used but defined nowhere is an error.
"use strict";

const js = require("@eslint/js");
const globals = require("globals");

const ro = (names) => Object.fromEntries(names.map((n) => [n, "readonly"]));
const PORTAL = ["T", "LOCALE", "ZONE", "USER", "PAGE", "$", "enc", "ApiError", "toLogin", "api", "el", "fmt",
                "personName", "clock", "stamp", "duration", "dur", "failure", "showError", "poll"];
const ADMIN = ["bytes", "ago", "stageChart", "stackChart", "trendChart", "barChart", "STAGE_COLORS", "localToIso",
               "localDay", "apiWithTotal"];
// The study page's three files call each other at run time (after all three have loaded).
const VIEWER = ["dicomDate", "tag", "Viewer", "wireKeys", "openPrior", "closePrior", "prior"];
const REPORT = ["R", "notice", "loadReports", "loadTemplates", "wireReport"];
const STUDY = ["STUDY", "study", "main", "loadPriors"];

module.exports = [
  { ignores: ["node_modules/", "tests/ohif/", "var/", "build/", ".venv/"] },
  js.configs.recommended,
  {
    files: ["reader_portal/static/**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "script", globals: { ...globals.browser } },
    rules: {
      // Top-level names are the files' interface to each other; unused locals are still errors.
      "no-unused-vars": ["error", { vars: "local", args: "after-used", caughtErrors: "none" }],
      "no-implicit-globals": "off",
      eqeqeq: ["error", "always"],
      "no-var": "error",
      "prefer-const": "error",
      strict: ["error", "global"],
    },
  },
  { files: ["reader_portal/static/*.js"], ignores: ["reader_portal/static/portal.js"],
    languageOptions: { globals: ro(PORTAL) } },
  { files: ["reader_portal/static/admin_*.js"], languageOptions: { globals: ro(ADMIN) } },
  { files: ["reader_portal/static/viewer.js"], languageOptions: { globals: ro([...REPORT, ...STUDY]) } },
  { files: ["reader_portal/static/report.js"], languageOptions: { globals: ro([...VIEWER, ...STUDY]) } },
  { files: ["reader_portal/static/study.js"], languageOptions: { globals: ro([...VIEWER, ...REPORT]) } },
  { files: ["eslint.config.js"], languageOptions: { sourceType: "commonjs", globals: { ...globals.node } } },
];
