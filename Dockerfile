# The syncgov image: the controller, and the runner of Job-executor pods (`syncgov run`).
#
#   docker build -t syncgov .                        on the public Node image
#   podman build --build-arg BASE=<image> -t syncgov .  on any base with node 24 and npm on PATH
#
# Contract with charts/syncgov and the runner Jobs (controller/runner/executors.ts): `syncgov` is on
# PATH (their containers' command), the user is 65532, and nothing is written outside /tmp at run
# time (the root filesystem is read-only; /tmp is an emptyDir there). The ChildProcess executor's
# logs go to /tmp/syncgov-runs (the chart's --runner-log-dir; also the default under os.tmpdir()).
ARG BASE=node:24-bookworm-slim

# --- build: the TypeScript compiled to dist/ --------------------------------------------------------
FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Dependency install scripts are not run here: they fetch a Node binary and PostgreSQL's (the tests'),
# which compiling does not need. npm's cache is a cache mount, kept between builds and never part of
# an image.
RUN --mount=type=cache,id=syncgov-npm,target=/root/.npm \
    npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY controller/ controller/
# The kafkajs patch (the repository's `prepare` script; patch-package is a dev dependency): the final
# stage takes this patched kafkajs, the lockfile's same version.
RUN npx patch-package --patch-dir controller/connectors/kafka/patches && npm run build

# --- final: production dependencies and dist/, owned by root and read-only to the user -------------
FROM ${BASE}
# npm then leaves dev dependencies out, and libraries take their production paths.
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# No production dependency has an install script, and the repository's own `prepare` (the kafkajs
# patch) needs a dev dependency: scripts are off, and the patched kafkajs comes from the build stage.
# /tmp is a tmpfs for this step: npm leaves its compile cache there, which the image has no use for.
RUN --mount=type=cache,id=syncgov-npm,target=/root/.npm --mount=type=tmpfs,target=/tmp \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY --from=build /src/node_modules/kafkajs/ node_modules/kafkajs/
COPY --from=build /src/dist/ dist/
# `syncgov` on PATH: the chart's and the runner Jobs' command. The CLI's shebang finds node on PATH;
# Node resolves the link, so the CLI finds package.json and its sibling entry files from /app.
RUN chmod 0755 dist/controller/cli.js \
    && ln -s /app/dist/controller/cli.js /usr/local/bin/syncgov
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/controller/cli.js"]
# Without arguments the image lists its commands.
CMD ["--help"]
