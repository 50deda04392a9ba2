// The GRU step, fused: GRUFast.forward_step / backward_step of gru.py, one thread per (row b, unit j).
extern "C" __global__ void gru_forward_step(
    real* gates, const real* a_hh,            // (B, 3H): -a_r, -a_z, W_in x + b_in | W_hh h_{t-1} (r, z negated)
    const real* b_hn,                         // (H,) or a dummy (has_bias = 0)
    const real* h_prev, real* h_new, real* m, // (B, H); m out: W_hn h_{t-1} + b_hn
    const bool* valid, int has_mask, int has_bias, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k % H;
    real* gates_t = gates + (size_t)b * 3 * H;
    const real* a_hh_t = a_hh + (size_t)b * 3 * H;
    real r = 1 / (1 + exp(gates_t[j] + a_hh_t[j]));
    real z = 1 / (1 + exp(gates_t[H + j] + a_hh_t[H + j]));
    real m_t = a_hh_t[2 * H + j] + (has_bias ? b_hn[j] : 0);   // m = W_hn h_{t-1} + b_hn
    real n = tanh(gates_t[2 * H + j] + r * m_t);                 // n = tanh(W_in x_t + b_in + r * m)
    gates_t[j] = r; gates_t[H + j] = z; gates_t[2 * H + j] = n;
    m[k] = m_t;
    bool keep = !has_mask || valid[b];                           // padded steps carry the state through
    h_new[k] = keep ? n + z * (h_prev[k] - n) : h_prev[k];       // h_t = n + z (h_{t-1} - n)
}

extern "C" __global__ void gru_backward_step(
    const real* gates, const real* h_prev, const real* m,       // (B, 3H) r, z, n; (B, H); (B, H)
    const real* dout_t,                                         // (B, H) or a dummy (has_dout = 0)
    real* dh_carry, const real* dh_gemm,                        // dh = dh_carry + dh_gemm (+ dout); carry out
    real* dgates_x, real* dgates_h,                             // (B, 3H) out: [da_r, da_z, da_n], [.., da_n r]
    const bool* valid, int has_mask, int has_dout, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k % H;
    const real* gates_t = gates + (size_t)b * 3 * H;
    real* dgx = dgates_x + (size_t)b * 3 * H;
    real* dgh = dgates_h + (size_t)b * 3 * H;
    real dh = dh_carry[k] + dh_gemm[k] + (has_dout ? dout_t[k] : 0);
    if (has_mask && !valid[b]) {                                // padded: the gradient passes straight through
        dgx[j] = 0; dgx[H + j] = 0; dgx[2 * H + j] = 0;
        dgh[j] = 0; dgh[H + j] = 0; dgh[2 * H + j] = 0;
        dh_carry[k] = dh;
        return;
    }
    real r = gates_t[j], z = gates_t[H + j], n = gates_t[2 * H + j];
    real da_n = dh * (1 - z) * (1 - n * n);                     // da_n = dh (1 - z) (1 - n^2)
    real da_r = da_n * m[k] * r * (1 - r);                      // da_r = da_n m r (1 - r)
    real da_z = dh * (h_prev[k] - n) * z * (1 - z);             // da_z = dh (h_{t-1} - n) z (1 - z)
    dgx[j] = da_r; dgx[H + j] = da_z; dgx[2 * H + j] = da_n;
    dgh[j] = da_r; dgh[H + j] = da_z; dgh[2 * H + j] = da_n * r;
    dh_carry[k] = dh * z;                                       // dh_{t-1} = dh z + dG_h W_hh (the next GEMM)
}
