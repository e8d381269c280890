"""What each built-in method is, as the paper's Methods paragraph says it once per method the study ran, with its
citation (methods.py adds each configuration's own hyper-parameters from its recorded config). A method added to
peftlab gets an entry here (docs/methods/adding-a-method.md)."""

WHAT = {
    "full": "Full fine-tuning trains every parameter. ",
    "linear": "The linear probe trains only the classifier head. ",
    "lora": "LoRA adds to a frozen weight $W$ the update $\\Delta W = \\frac{\\alpha}{r} B A$, $B$ starting at zero "
    "\\citep{hu2022lora}. ",
    "adalora": "AdaLoRA writes the update as $P \\Lambda Q$ and prunes singular values by an importance score "
    "during training, from a larger initial rank to a smaller total budget \\citep{zhang2023adalora}. ",
    "adaptive": "The rank controller (peftlab's own) builds LoRA at a larger rank, scores each module's importance "
    "while training and moves ranks between modules within a fixed total, masking the ranks it takes "
    "away. ",
    "qalora": "QA-LoRA quantizes the base group-wise and average-pools the adapter's input over each group, so that "
    "the update folds into the groups' zero points and the merged model keeps the same integer codes "
    "\\citep{xu2024qalora}. ",
    "bitfit": "BitFit trains only the bias terms of the backbone and the head \\citep{benzaken2022bitfit}. ",
    "ln": "LayerNorm tuning trains only the affine scale and shift of every LayerNorm and the head "
    "\\citep{basu2024strong}. ",
    "ssf": "SSF scales and shifts the output of every linear layer, LayerNorm and the patch embedding "
    "channel by channel, "
    "starting from the identity, and folds both into the preceding weights at merge time \\citep{lian2022ssf}. ",
    "difffit": "DiffFit trains the bias terms, the LayerNorms, the head and a per-channel scale on the attention and "
    "the MLP branch of every block, starting at one and folded into each branch's output projection at "
    "merge time \\citep{xie2023difffit}, as PETL\\_Vision applies it to ViTs \\citep{mai2024lessons}. ",
    "houlsby": "Houlsby adapters add a zero-initialised bottleneck MLP with a residual connection after the attention "
    "and after the MLP of every block \\citep{houlsby2019adapters}. ",
    "pfeiffer": "Pfeiffer adapters add one zero-initialised bottleneck MLP with a residual connection after the MLP "
    "of every block only \\citep{pfeiffer2021adapterfusion}. ",
    "adaptformer": "AdaptFormer adds a scaled bottleneck branch in parallel to the MLP of every block "
    "\\citep{chen2022adaptformer}. ",
    "convpass": "Convpass adds beside the attention and the MLP of every block a bottleneck whose middle is a "
    "$3 \\times 3$ convolution over the patch grid, its output projection starting at zero; the convolution keeps it "
    "from folding into the weights \\citep{jie2022convpass}. ",
    "repadapter": "RepAdapter puts a linear bottleneck with a group-wise up projection before the attention and the "
    "MLP of every block, with no nonlinearity, so that it folds into the layers it feeds at merge time "
    "\\citep{luo2023repadapter}. ",
    "fact_tt": "FacT factorizes the updates of all blocks' attention and MLP weights together: two projections "
    "shared by every block and a small core per weight matrix, its own in the tensor-train form (FacT-TT), and "
    "folds them into the weights at merge time \\citep{jie2023fact}. ",
    "fact_tk": "FacT-TK writes the same updates in the Tucker form, each core built from factors shared across "
    "blocks, and folds them into the weights at merge time \\citep{jie2023fact}. ",
    "vpt": "Visual prompt tuning inserts learned tokens after the class token, at the input (shallow) or anew before "
    "every block (deep), with the backbone frozen \\citep{jia2022vpt}. ",
    "dora": "DoRA splits each adapted weight into a magnitude per output row and a direction, and trains the "
    "magnitude and a LoRA update of the direction \\citep{liu2024dora}. ",
    "vera": "VeRA shares one pair of frozen random low-rank projections across all adapted layers and trains only "
    "two scaling vectors per layer \\citep{kopiczko2024vera}. ",
    "ia3": "IA3 rescales the output of each adapted layer (of a feed-forward one, its input) by a learned vector that "
    "starts at one "
    "\\citep{liu2022ia3}. ",
    "loha": "LoHa writes the update as the Hadamard product of two low-rank products \\citep{hyeonwoo2022fedpara}. ",
    "lokr": "LoKr writes the update as a Kronecker product of a small matrix and a low-rank one "
    "\\citep{edalati2022krona,yeh2024lycoris}. ",
    "oft": "OFT rotates the input of each adapted layer by a learned block-diagonal orthogonal matrix, which keeps the "
    "angles between the layer's neurons \\citep{qiu2023oft}. ",
    "boft": "BOFT rotates the input of each adapted layer by an orthogonal matrix built from butterfly-permuted "
    "block-diagonal factors and scales each output by a learned vector \\citep{liu2024boft}. ",
    "prompt_tuning": "Prompt tuning puts learned embeddings of virtual tokens before the text of a frozen language "
    "model \\citep{lester2021prompt}. ",
    "prefix_tuning": "Prefix tuning gives every attention layer learned keys and values of virtual tokens before the "
    "text, with the language model frozen \\citep{li2021prefix}. ",
}


# a causal LM's LM head stays frozen under every method but full fine-tuning (backbones.trains_head)
LM_WHAT = {
    "full": "Full fine-tuning trains every parameter, the language-model head included; every other method leaves "
    "that head frozen. ",
    "lora": "LoRA adds to a frozen weight $W$ the update $\\Delta W = \\frac{\\alpha}{r} B A$, $B$ starting at zero "
    "\\citep{hu2022lora}. ",
    "bitfit": "BitFit trains only the bias terms of the model \\citep{benzaken2022bitfit}. ",
    "ln": "LayerNorm tuning trains only the affine scale and shift of every LayerNorm \\citep{basu2024strong}. ",
}

# said once where a run's base was stored quantized (quant.mode); each configuration's sentence names its format
QUANT_WHAT = (
    "A run on a quantized base (QLoRA-style) trains the same adapter on a base whose linear layers are stored in "
    "fewer bits and dequantized in each forward pass. "
)
