// s3rver with S3's conditional writes, for Tansu's s3:// storage engine.
//
// Tansu creates and updates its metadata objects (a partition's watermark.json, the cluster's
// meta.json) with conditional PUTs: `If-None-Match: *` (create only if absent) and
// `If-Match: <etag>` (replace only the version it read). s3rver 3.7 ignores both headers, so a
// restarted broker that "creates" a watermark which exists overwrote it with 0 and restarted
// every partition log. This wrapper answers them as S3 does (412 Precondition Failed) before
// s3rver's own routes. One process serves one broker: the check and the write are not atomic
// against concurrent writers of the same key, which a single broker does not have.
//
//   node s3rver_conditional.js DIRECTORY   (prints "S3rver listening on 127.0.0.1:PORT")
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const S3rver = require('s3rver');

const directory = process.argv[2];
const server = new S3rver({ directory, address: '127.0.0.1', port: 0, silent: true });

function currentEtag(bucket, key) {
  const object = server.store.getResourcePath(bucket, key, 'object');
  if (!fs.existsSync(object)) return null;
  const md5 = server.store.getResourcePath(bucket, key, 'object.md5');
  if (fs.existsSync(md5)) return fs.readFileSync(md5, 'utf8').trim();
  return crypto.createHash('md5').update(fs.readFileSync(object)).digest('hex');
}

async function conditionalPut(ctx, next) {
  const ifNoneMatch = ctx.get('if-none-match');
  const ifMatch = ctx.get('if-match');
  if (ctx.method !== 'PUT' || (!ifNoneMatch && !ifMatch)) return next();
  const [, bucket, ...rest] = decodeURIComponent(ctx.path).split('/');
  const etag = currentEtag(bucket, rest.join('/'));
  const unquoted = value => value.replace(/^W\//, '').replace(/"/g, '').trim();
  const failed = (ifNoneMatch && etag !== null && (ifNoneMatch.trim() === '*' || unquoted(ifNoneMatch) === etag))
    || (ifMatch && (etag === null || (ifMatch.trim() !== '*' && unquoted(ifMatch) !== etag)));
  if (!failed) return next();
  ctx.status = etag === null ? 404 : 412;
  ctx.type = 'application/xml';
  ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
    + (etag === null ? 'NoSuchKey' : 'PreconditionFailed')
    + '</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>';
}

server.middleware.unshift(conditionalPut);
server.run().then(({ address, port }) => console.log(`S3rver listening on ${address}:${port}`)).catch(err => {
  console.error(err);
  process.exit(1);
});
