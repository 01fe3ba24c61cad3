// Parses an AsyncAPI document with the AsyncAPI initiative's own parser (and its Avro
// schema parser, so every payload schema is checked as Avro too). Exit 1 on any error.
import fs from 'node:fs';
import { Parser } from '@asyncapi/parser';
import { AvroSchemaParser } from '@asyncapi/avro-schema-parser';

const parser = new Parser();
parser.registerSchemaParser(AvroSchemaParser());
const { document, diagnostics } = await parser.parse(fs.readFileSync(process.argv[2], 'utf8'));
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of errors) console.error(`error ${d.code}: ${d.message} at ${JSON.stringify(d.path)}`);
if (!document || errors.length) {
  console.error(`${process.argv[2]}: invalid AsyncAPI`);
  process.exit(1);
}
console.log(`${process.argv[2]}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.allMessages().length} messages`);
