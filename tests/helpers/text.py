"""A user's text model and data, built locally (no download): a templated 3-class corpus, a
word-level tokenizer trained on it with the `tokenizers` library and a tiny BERT saved with
save_pretrained, exactly as a user would hand them to the line."""
from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "sport": ["football", "tennis", "goal", "match", "team", "coach", "stadium", "league"],
    "food": ["pasta", "bread", "soup", "cheese", "recipe", "kitchen", "dessert", "salad"],
    "weather": ["rain", "storm", "sunny", "cloud", "wind", "snow", "forecast", "thunder"],
}
FILLERS = ["the", "a", "today", "really", "was", "is", "very", "and", "we", "saw", "about",
           "news", "our", "new", "old", "big", "small", "this", "that", "morning", "evening"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentences(count: int, seed: int = 0) -> list[dict]:
    """Rows {"text", "label"}: filler words with two words of the class's topic mixed in."""
    rng = random.Random(seed)
    names = list(TOPICS)
    rows = []
    for index in range(count):
        label = names[index % len(names)]
        words = rng.choices(FILLERS, k=rng.randint(4, 9)) + rng.sample(TOPICS[label], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def save_tokenizer(texts: list[str], folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(str(folder))
    return fast


def save_tiny_bert(folder: Path, texts: list[str], *, task: str = "classification", layers: int = 2,
                   hidden: int = 64, heads: int = 4, seed: int = 0) -> Path:
    """An untrained tiny BERT (classifier with 3 labels, or a plain encoder) + its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    tokenizer = save_tokenizer(texts, folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden,
                        max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(seed)
    if task == "classification":
        config.num_labels = len(TOPICS)
        config.id2label = dict(enumerate(TOPICS))
        config.label2id = {name: index for index, name in enumerate(TOPICS)}
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config, add_pooling_layer=False)
    model.save_pretrained(str(folder))
    return folder
