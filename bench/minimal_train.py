"""The yardstick of bench/overhead.py: fine-tuning as a careful engineer writes it by hand.

Decodes a folder of class sub-folders with PIL, holds out 20% of each class, fine-tunes a timm
model from a local checkpoint with AdamW, warm-up and cosine decay, validates after every
epoch, and saves the model. Run: ``python bench/minimal_train.py FOLDER CHECKPOINT OUT [EPOCHS]``.
"""

import math
import sys
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

folder, checkpoint, out = (Path(arg) for arg in sys.argv[1:4])
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
size, batch, lr, seed = 32, 64, 3e-3, 0
torch.manual_seed(seed)
classes = sorted(path.name for path in folder.iterdir() if path.is_dir())
files = [(path, label) for label, name in enumerate(classes) for path in sorted((folder / name).glob("*.png"))]
images = torch.from_numpy(np.stack([np.asarray(Image.open(path).convert("RGB").resize((size, size))) for path, _ in files]))
images = images.permute(0, 3, 1, 2).contiguous()
labels = torch.tensor([label for _, label in files])
rng = np.random.default_rng(seed)
val_rows = np.concatenate([rng.permutation(np.flatnonzero(labels.numpy() == c))[: round(0.2 * (labels == c).sum().item())] for c in range(len(classes))])
is_val = torch.zeros(len(labels), dtype=torch.bool)
is_val[torch.from_numpy(val_rows)] = True
train_x, train_y, val_x, val_y = images[~is_val], labels[~is_val], images[is_val], labels[is_val]

model = timm.create_model("test_resnet", num_classes=len(classes))
model.load_state_dict(load_file(checkpoint), strict=False)
optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
steps = epochs * math.ceil(len(train_y) / batch)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
for epoch in range(epochs):
    model.train()
    for rows in torch.randperm(len(train_y)).split(batch):
        loss = F.cross_entropy(model((train_x[rows].float() / 255 - mean) / std), train_y[rows], label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model((x.float() / 255 - mean) / std).argmax(1) for x in val_x.split(256)])
    print(f"epoch {epoch + 1}: val accuracy {(predictions == val_y).float().mean():.4f}")
save_file(model.state_dict(), out)
