/**
 * Built-in example prompts. Their formats follow the model's training corpus
 * (training/prepare_corpus.py): plain prose, a passage repeated "word for word" (watch induction
 * heads attend to the earlier copy), and a pass-key retrieval prompt (watch the heads that find
 * the needle — and what a compressed cache does to it).
 */
export interface ExamplePrompt {
  id: string;
  label: string;
  hint: string;
  text: string;
}

const PASSAGE =
  'The so-called desktop metaphor of today\'s workstations is instead an airplane-seat metaphor. ' +
  'Anyone who has shuffled a lap full of papers while seated between two portly passengers will ' +
  'recognize the difference: one can see only a very few things at once.';

const FILLER = [
  'The grass is green and the sky is blue.',
  'The sun rose over the quiet hills and the birds began to sing.',
  'A farmer walked slowly along the road with his old dog.',
  'The river ran past the mill and on toward the sea.',
  'In the evening the lamps were lit and supper was laid upon the table.',
  'The wind moved through the trees and the leaves fell in the yard.',
  'Children played by the well until their mothers called them home.',
  'The market was full of bread, cheese, apples and wool.',
];

function passkeyPrompt(key: string, before: number, after: number): string {
  const filler = (from: number, n: number) => Array.from({ length: n }, (_, i) => FILLER[(from + i) % FILLER.length]).join(' ');
  return (
    'There is a pass key hidden inside a lot of irrelevant text. Find it and remember it.\n\n' +
    `${filler(0, before)}\n` +
    `The pass key is ${key}. Remember it. ${key} is the pass key.\n` +
    `${filler(3, after)}\n` +
    'What is the pass key? The pass key is'
  );
}

export const EXAMPLES: readonly ExamplePrompt[] = [
  {
    id: 'prose',
    label: 'Prose',
    hint: 'Plain text: most heads look at the first token (the attention sink) and the last few tokens.',
    text: 'In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void; and darkness was upon the face of the deep. And',
  },
  {
    id: 'repeat',
    label: 'Repeated passage',
    hint: 'A passage and the start of its copy: induction heads attend to the token after the earlier occurrence.',
    text: `${PASSAGE}\n\nOnce more, word for word:\n\nThe so-called desktop metaphor of today's`,
  },
  {
    id: 'passkey',
    label: 'Pass key (needle)',
    hint: 'A number hidden in filler text: retrieval heads must find it again at the end. Try a sliding window that evicts it.',
    text: passkeyPrompt('71432', 12, 14),
  },
];
