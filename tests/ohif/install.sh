#!/usr/bin/env bash
# Installs the OHIF viewer's prebuilt release (the `@ohif/app` package on npm ships its
# built `dist/`) into tests/ohif/dist for tests/county/test_ohif_viewer.py. Pinned by
# version and by the registry's sha512, like a lockfile entry; nothing else of npm's
# dependency tree is needed to serve the built files. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=3.13.2
INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
if [ -f dist/.ohif-version ] && [ "$(cat dist/.ohif-version)" = "$VERSION" ]; then
  exit 0
fi
tarball="ohif-app-$VERSION.tgz"
npm pack --silent "@ohif/app@$VERSION" >/dev/null
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
  echo "tests/ohif: $tarball is not the pinned @ohif/app $VERSION ($got)" >&2
  rm -f "$tarball"
  exit 1
fi
rm -rf dist package
tar xzf "$tarball" package/dist
mv package/dist dist
rmdir package
rm -f "$tarball"
echo "$VERSION" > dist/.ohif-version
